"""Catalog version 2 over HTTP: what the cards say and offer for the patients the clinical
review found mishandled, written as EHRs code them (fhir_examples/scenarios/v2-*).

Which rules fire is checked for every example in test_http_api.py; here, the content a
clinician acts on: no one-click NSAID where it is unsafe, no fluid advice with low sodium, the
decisive value in the summary, evidence as a clinician writes it, imaging graded to the flag.
"""

from __future__ import annotations

import pytest
from conftest import load_scenario

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
IBUPROFEN = (RXNORM, "197805")


def cards_of(client, name: str) -> dict[str, dict]:
    request, expected = load_scenario(name)
    response = client.call(expected["service"], request)
    assert response.status_code == 200, response.text
    return {card["source"]["topic"]["code"]: card for card in response.json()["cards"]}


def suggested_codes(card: dict) -> set[tuple[str, str]]:
    codes = set()
    for suggestion in card.get("suggestions") or []:
        for action in suggestion["actions"]:
            resource = action.get("resource") or {}
            concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
            codes |= {(c["system"], c["code"]) for c in concept.get("coding", [])}
    return codes


def all_suggested(cards: dict[str, dict]) -> set[tuple[str, str]]:
    return set().union(*(suggested_codes(c) for c in cards.values())) if cards else set()


def advice(card: dict) -> str:
    """The card's advice: its detail up to the findings."""
    return card["detail"].split("**Findings**")[0]


def findings(card: dict) -> str:
    detail = card["detail"]
    return (
        detail.split("**Findings**", 1)[1].split("**Sources:**")[0]
        if "**Findings**" in detail
        else ""
    )


# --- cauda equina --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "v2-ces-snomed-retention-faecal",
        "v2-ces-snomed-no-cramps",
        "v2-ces-note-numb-bum",
        "v2-ces-note-urine-stream",
        "v2-ces-hesitancy-r3911",
        "v2-ces-r200-perineum",
        "v2-ces-saddle-local-code",
    ],
)
def test_cauda_equina_signs_as_ehrs_send_them_get_the_critical_card_and_no_reassurance(
    client, name
):
    cards = cards_of(client, name)
    card = cards["cauda-equina-red-flag"]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Suspected cauda equina syndrome: emergency assessment now")
    # Nothing reassures: no plan of conservative care, no association, no one-click NSAID.
    assert "sciatica-management" not in cards and "cramp-sciatica-association" not in cards
    assert IBUPROFEN not in all_suggested(cards)
    assert (LOINC, "30679-5") in suggested_codes(card)


def test_plain_words_for_saddle_numbness_are_a_red_flag_not_a_nerve_symptom(client):
    card = cards_of(client, "v2-ces-note-numb-bum")["cauda-equina-red-flag"]
    lines = findings(card)
    assert "Saddle anaesthesia" in lines
    assert "New bladder or bowel change" in lines
    assert "Nerve symptom" not in lines


def test_r20_with_a_perineal_body_site_is_saddle_anaesthesia(client):
    card = cards_of(client, "v2-ces-r200-perineum")["cauda-equina-red-flag"]
    assert "Saddle anaesthesia" in findings(card)


def test_a_sign_15_days_old_is_not_new_but_13_days_is(client):
    assert "cauda-equina-red-flag" in cards_of(client, "v2-ces-retention-13-days")
    assert "cauda-equina-red-flag" not in cards_of(client, "v2-ces-retention-15-days")


# --- motor deficit -------------------------------------------------------------------------


def test_snomed_weakness_and_numbness_are_read_and_no_card_denies_nerve_symptoms(client):
    cards = cards_of(client, "v2-motor-snomed-weakness-numbness")
    assert cards["motor-deficit-red-flag"]["indicator"] == "warning"
    assert "Leg weakness" in findings(cards["motor-deficit-red-flag"])
    for card in cards.values():
        assert "No nerve symptoms" not in card["detail"]


def test_both_feet_dropping_is_critical_with_ed_and_stat_mri(client):
    card = cards_of(client, "v2-motor-foot-drop-both-sides")["motor-deficit-red-flag"]
    assert card["indicator"] == "critical"
    assert "emergency assessment now" in card["summary"]
    assert (SNOMED, "183866009") in suggested_codes(card)


# --- NSAIDs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("v2-nsaid-pregnant-patient-view", "pregnancy"),
        ("v2-nsaid-older-acei-thiazide-patient-view", "ACE inhibitor or ARB with a diuretic"),
        ("v2-nsaid-allergy-patient-view", "NSAID allergy"),
        ("v2-nsaid-allergies-unknown-patient-view", "allergies unknown"),
    ],
)
def test_no_one_click_nsaid_when_unsafe_and_the_card_says_why(client, name, reason):
    card = cards_of(client, name)["sciatica-management"]
    assert IBUPROFEN not in suggested_codes(card)
    assert reason in advice(card)


def test_the_older_adult_on_ace_inhibitor_and_thiazide_has_every_caution_named(client):
    card = cards_of(client, "v2-nsaid-older-acei-thiazide-patient-view")["sciatica-management"]
    text = advice(card)
    assert "age 65 or over" in text and "eGFR 30-59" in text
    assert "proton-pump inhibitor" in text  # NG59: gastroprotection at 65 or over


@pytest.mark.parametrize(
    ("name", "indicator", "deletes"),
    [
        ("v2-nsaid-pregnant-order-sign", "warning", True),
        ("v2-nsaid-duplicate-naproxen-sign", "warning", True),
        ("v2-nsaid-egfr-29-sign", "warning", True),
        ("v2-nsaid-egfr-30-sign", "info", False),
        ("v2-nsaid-ssri-sign", "info", False),
    ],
)
def test_an_nsaid_order_is_a_warning_with_a_contraindication_and_info_with_a_caution(
    client, name, indicator, deletes
):
    card = cards_of(client, name)["nsaid-caution"]
    assert card["indicator"] == indicator
    actions = [a for s in card.get("suggestions") or [] for a in s["actions"]]
    assert any(a["type"] == "delete" for a in actions) is deletes
    assert "paracetamol alone" not in card["summary"]


def test_age_65_alone_suggests_a_proton_pump_inhibitor_instead_of_deleting(client):
    card = cards_of(client, "v2-nsaid-age-65-sign")["nsaid-caution"]
    assert card["indicator"] == "info"
    assert (RXNORM, "7646") in suggested_codes(card)
    assert not [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert "nsaid-caution" not in cards_of(client, "v2-nsaid-age-64-sign")


# --- electrolytes --------------------------------------------------------------------------


def test_low_sodium_on_a_thiazide_withholds_fluid_advice(client):
    cards = cards_of(client, "v2-electrolyte-sodium-thiazide")
    card = cards["electrolyte-cramp-cause"]
    assert "Sodium 128" in card["summary"]
    assert "do not advise extra fluids" in advice(card)
    assert "Advise adequate fluid intake" not in advice(card)
    assert "Diuretic, a likely cause" in findings(card)
    for other in cards.values():
        assert "Hydration and adequate electrolytes" not in other["detail"]


@pytest.mark.parametrize(
    ("name", "quoted", "marked"),
    [
        ("v2-electrolyte-potassium-ll", "Potassium 2.9", True),
        ("v2-electrolyte-potassium-2-99", "Potassium 2.99", True),
        ("v2-electrolyte-potassium-3-0", "Potassium 3", False),
    ],
)
def test_markedly_low_potassium_leads_and_says_act_today(client, name, quoted, marked):
    card = cards_of(client, name)["electrolyte-cramp-cause"]
    assert card["summary"].startswith(quoted)
    assert ("markedly low" in card["summary"]) is marked
    assert ("ECG" in advice(card)) is marked


def test_an_ionized_calcium_is_judged_by_its_own_threshold_and_never_as_a_total(client):
    card = cards_of(client, "v2-electrolyte-ionized-calcium-low")["electrolyte-cramp-cause"]
    assert "Ionized calcium" in card["summary"]
    assert "electrolyte-cramp-cause" not in cards_of(
        client, "v2-electrolyte-ionized-calcium-normal"
    )


def test_a_local_lab_code_is_read_by_name_and_says_so(client):
    card = cards_of(client, "v2-electrolyte-local-potassium-by-name")["electrolyte-cramp-cause"]
    assert "lab, matched by name" in findings(card)


# --- serious pathology and imaging ---------------------------------------------------------


def test_fever_offers_mri_with_contrast_blood_tests_and_cultures(client):
    card = cards_of(client, "v2-serious-fever-degf-6-days")["serious-pathology-red-flag"]
    codes = suggested_codes(card)
    assert {(CPT, "72158"), (LOINC, "4537-7"), (LOINC, "1988-5"), (LOINC, "58410-2")} <= codes
    assert (LOINC, "600-7") in codes
    assert "same-day assessment" in advice(card)
    assert "infection" in card["summary"]


def test_cancer_history_offers_mri_and_inflammatory_markers_but_no_cultures(client):
    card = cards_of(client, "v2-serious-colon-cancer-snomed")["serious-pathology-red-flag"]
    codes = suggested_codes(card)
    assert {(LOINC, "30679-5"), (LOINC, "4537-7"), (LOINC, "1988-5")} <= codes
    assert (LOINC, "600-7") not in codes and (CPT, "72158") not in codes


def test_fracture_risk_counts_only_in_a_new_episode_and_gets_a_radiograph(client):
    card = cards_of(client, "v2-serious-osteoporosis-new-episode")["serious-pathology-red-flag"]
    assert suggested_codes(card) == {(CPT, "72100")}
    assert "serious-pathology-red-flag" not in cards_of(client, "v2-serious-osteoporosis-stable")


def test_imaging_stewardship_dates_the_episode_from_the_latest_sciatica(client):
    card = cards_of(client, "v2-imaging-mri-new-sciatica-old-back-pain")["imaging-stewardship"]
    assert "Episode onset" in findings(card)
    assert "imaging-stewardship" in cards_of(client, "v2-imaging-xray-5-weeks")
    assert "imaging-stewardship" not in cards_of(client, "v2-imaging-xray-7-weeks")


# --- records read by name, hook scoping ----------------------------------------------------


def test_a_record_with_an_unknown_code_is_read_by_name_and_says_so(client):
    cards = cards_of(client, "v2-sciatica-by-name")
    assert "matched by name" in findings(cards["cramp-sciatica-association"])


def test_order_hooks_show_red_flags_and_order_checks_only(client):
    assert cards_of(client, "v2-scoping-low-potassium-order-sign") == {}
    assert "electrolyte-cramp-cause" in cards_of(client, "v2-scoping-low-potassium-patient-view")


# --- medication groups read from records as EHRs send them ---------------------------------


def _with_medication(name: str, resource: dict) -> tuple[dict, dict]:
    """The SSRI order-sign example with its sertraline replaced by `resource`."""
    request, expected = load_scenario("v2-nsaid-ssri-sign")
    resource = {"subject": {"reference": f"Patient/{request['context']['patientId']}"}, **resource}
    request["prefetch"]["medications"]["entry"] = [{"resource": resource}]
    return request, expected


def _nsaid_card(client, request: dict, expected: dict) -> dict | None:
    response = client.call(expected["service"], request)
    assert response.status_code == 200, response.text
    cards = {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}
    return cards.get("nsaid-caution")


def _drug(id_: str, text: str, status: str = "active", kind: str = "MedicationRequest") -> dict:
    resource = {
        "resourceType": kind,
        "id": id_,
        "status": status,
        "medicationCodeableConcept": {"text": text},
    }
    if kind == "MedicationRequest":
        resource["intent"] = "order"
    return resource


@pytest.mark.parametrize(
    ("text", "indicator", "reason"),
    [
        ("prednisone 20 mg tablet", "info", "oral corticosteroid"),
        ("clopidogrel 75 mg tablet", "info", "antiplatelet"),
        ("aspirin 81 mg tablet", "info", "antiplatelet"),
        # Aspirin above 325 mg a dose is an NSAID at analgesic doses: a duplicate NSAID.
        ("aspirin 650 mg tablet", "warning", "already on an NSAID"),
        ("apixaban 5 mg tablet", "warning", "anticoagulant"),
    ],
)
def test_drugs_named_only_by_text_are_read_for_the_nsaid_check(client, text, indicator, reason):
    request, expected = _with_medication("drug", _drug("drug", text))
    card = _nsaid_card(client, request, expected)
    assert card is not None and card["indicator"] == indicator
    assert reason in card["summary"]


def test_a_medication_statement_counts_like_an_active_order(client):
    request, expected = _with_medication(
        "drug", _drug("drug", "warfarin 5 mg tablet", kind="MedicationStatement")
    )
    card = _nsaid_card(client, request, expected)
    assert (
        card is not None and card["indicator"] == "warning" and "anticoagulant" in card["summary"]
    )
    # Stopped, it counts no more (and the SSRI caution it replaced is gone too).
    request, expected = _with_medication(
        "drug",
        _drug("drug", "warfarin 5 mg tablet", status="completed", kind="MedicationStatement"),
    )
    assert _nsaid_card(client, request, expected) is None


def test_a_gestational_age_within_300_days_is_a_pregnancy(client):
    request, expected = load_scenario("v2-nsaid-age-64-sign")
    request["prefetch"]["patient"]["birthDate"] = "1994-05-01"  # 32: no age caution
    patient = request["context"]["patientId"]
    gestation = {
        "resourceType": "Observation",
        "id": "ga",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "exam",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "11884-4", "display": "Gestational age Estimated"}]
        },
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-01",
        "valueQuantity": {
            "value": 24,
            "unit": "wk",
            "system": "http://unitsofmeasure.org",
            "code": "wk",
        },
    }
    request["prefetch"]["observations"]["entry"].append({"resource": gestation})
    card = _nsaid_card(client, request, expected)
    assert card is not None and card["indicator"] == "warning" and "pregnancy" in card["summary"]
    gestation["effectiveDateTime"] = "2025-12-01"  # 354 days before the examples' day
    assert _nsaid_card(client, request, expected) is None
