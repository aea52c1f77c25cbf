"""Clinical content of the cards, over HTTP with the example scenarios: what each card says and
offers (CLINICAL_RULES.md, "Rules").
"""

from __future__ import annotations

import base64
import re

import pytest
from conftest import load_scenario, scenario_names

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
CKS_RED_FLAGS = "https://cks.nice.org.uk/topics/sciatica-lumbar-radiculopathy/diagnosis/red-flag-symptoms-signs/"
MUSCLE_RELAXANTS = (
    "cyclobenzaprine",
    "methocarbamol",
    "tizanidine",
    "baclofen",
    "carisoprodol",
    "metaxalone",
    "orphenadrine",
    "chlorzoxazone",
    "diazepam",
)


def call(client, name: str, change=None) -> dict[str, dict]:
    """The cards the service answers a scenario with (optionally changed first), by rule id."""
    request, expected = load_scenario(name)
    if change is not None:
        change(request)
    response = client.call(expected["service"], request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    return {card["source"]["topic"]["code"]: card for card in cards}


def created(card: dict, resource_type: str) -> list[dict]:
    return [
        action["resource"]
        for suggestion in card.get("suggestions") or []
        for action in suggestion["actions"]
        if action["type"] == "create" and action["resource"]["resourceType"] == resource_type
    ]


def deleted(card: dict) -> list[str]:
    return [
        action["resourceId"]
        for suggestion in card.get("suggestions") or []
        for action in suggestion["actions"]
        if action["type"] == "delete"
    ]


def coded(resource: dict) -> set[tuple[str, str]]:
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    return {(c.get("system"), c.get("code")) for c in concept.get("coding") or []}


def orders_of(card: dict, system: str, *codes: str) -> list[dict]:
    """ServiceRequests the card offers coded with any of `codes`."""
    return [r for r in created(card, "ServiceRequest") if coded(r) & {(system, c) for c in codes}]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.:;])\s+|\n\s*\n", text) if s.strip()]


def conditions_bundle(request: dict) -> list[dict]:
    return request["prefetch"]["conditions"]["entry"]


def scenarios_firing(rule_id: str) -> list[str]:
    return [n for n in scenario_names() if rule_id in load_scenario(n)[1]["rule_ids"]]


# --- cauda-equina-red-flag ------------------------------------------------------------------


@pytest.mark.parametrize("name", scenarios_firing("cauda-equina-red-flag"))
def test_cauda_equina_card_says_emergency_assessment_now_and_offers_stat_mri_and_ed(client, name):
    card = call(client, name)["cauda-equina-red-flag"]
    assert card["indicator"] == "critical"
    assert "Emergency assessment now" in card["detail"]
    mri = orders_of(card, LOINC, "30679-5")
    assert [r.get("priority") for r in mri] == ["stat"]
    assert orders_of(card, SNOMED, "306254002", "183866009"), "no emergency department referral"
    assert CKS_RED_FLAGS in [link["url"] for link in card["links"]]


def test_cauda_equina_card_is_the_only_card_on_the_screen_when_it_fires(client):
    cards = call(client, "cauda-equina-retention")
    assert list(cards) == ["cauda-equina-red-flag"]


def test_cauda_equina_fires_despite_a_malformed_field_no_rule_reads(client):
    def malformed_note(request):
        condition = conditions_bundle(request)[1]["resource"]
        assert condition["code"]["coding"][0]["code"] == "G83.4"
        condition["note"] = [{"text": "Seen in ED", "time": "2026-11-17T10:00:00"}]

    assert "cauda-equina-red-flag" in call(client, "cauda-equina-coded", malformed_note)


# --- motor-deficit-red-flag -----------------------------------------------------------------


def test_motor_deficit_offers_neurosurgery_orthopaedics_and_mri(client):
    card = call(client, "motor-deficit-foot-drop")["motor-deficit-red-flag"]
    assert card["indicator"] == "warning"
    assert orders_of(card, SNOMED, "308482002"), "no neurosurgery referral"
    assert orders_of(card, SNOMED, "308481009"), "no orthopaedics referral"
    assert orders_of(card, LOINC, "30679-5"), "no MRI lumbar spine"


def test_bilateral_motor_deficit_is_critical_with_the_cauda_equina_urgency(client):
    """v2: bilateral foot drop or weakness takes the cauda equina card's urgency and its two stat
    suggestions (MRI stat, emergency department) instead of an urgent spinal referral."""
    card = call(client, "motor-deficit-bilateral")["motor-deficit-red-flag"]
    assert card["indicator"] == "critical"
    assert "emergency assessment now" in card["summary"]
    assert "**Emergency assessment now.**" in card["detail"]
    assert [r.get("priority") for r in orders_of(card, LOINC, "30679-5")] == ["stat"]
    assert orders_of(card, SNOMED, "306254002", "183866009"), "no emergency department referral"


# --- serious-pathology-red-flag -------------------------------------------------------------


def test_serious_pathology_names_cancer_history_and_offers_mri_esr_and_crp(client):
    card = call(client, "serious-cancer-history")["serious-pathology-red-flag"]
    assert card["indicator"] == "warning"
    assert "(cancer)" in card["summary"]
    assert "- Cancer history: Personal history of malignant neoplasm of breast (" in card["detail"]
    assert orders_of(card, LOINC, "30679-5"), "no MRI lumbar spine"
    assert orders_of(card, LOINC, "4537-7"), "no ESR"
    assert orders_of(card, LOINC, "1988-5"), "no CRP"


def test_serious_pathology_with_only_fracture_risk_offers_a_radiograph_but_no_esr_or_crp(client):
    """v2 grades the flags: fracture risk alone warrants a lumbar spine radiograph, not an MRI.
    (Osteoporosis in a new episode; long-term steroids, Z79.52, are also immunosuppression.)"""
    card = call(client, "v2-serious-osteoporosis-new-episode")["serious-pathology-red-flag"]
    assert "(fracture risk)" in card["summary"]
    assert "- Fracture risk in a new episode: Osteoporosis (" in card["detail"]
    assert "cancer history" not in card["detail"].lower()
    assert orders_of(card, CPT, "72100"), "no lumbar spine radiograph"
    assert orders_of(card, LOINC, "30679-5") == orders_of(card, CPT, "72158") == []
    assert orders_of(card, LOINC, "4537-7", "1988-5") == []


def test_serious_pathology_lists_age_over_50_as_supporting_evidence(client):
    card = call(client, "serious-cancer-history")["serious-pathology-red-flag"]
    assert "age 60" in card["detail"]


# --- cramp-sciatica-association -------------------------------------------------------------

OTHER_CAUSE_WORDS = ("electrolyte", "medicine", "comorbidit")


def test_association_with_both_supporting_features_and_no_other_cause_is_a_warning(client):
    card = call(client, "association-both-features")["cramp-sciatica-association"]
    assert card["indicator"] == "warning"
    detail = " ".join(card["detail"].lower().split())
    assert "consider sciatica as a contributor" in detail
    for reasoning in ("nerve", "guarding", "gait"):
        assert reasoning in detail
    assert not any(word in detail for word in OTHER_CAUSE_WORDS)


def test_association_with_other_causes_is_info_and_lists_them(client):
    cards = call(client, "mixed-three-causes")
    assert {"electrolyte-cramp-cause", "medication-cramp-cause", "comorbidity-cramp-cause"} <= set(
        cards
    )
    card = cards["cramp-sciatica-association"]
    assert card["indicator"] == "info"
    for word in OTHER_CAUSE_WORDS:
        assert word in card["detail"].lower(), word
        assert word in card["summary"].lower(), word


# --- sciatica-management --------------------------------------------------------------------


def _muscle_relaxant_offers(card: dict) -> list[str]:
    """Sentences of the advice (the detail before its sources) that mention a muscle relaxant
    without advising against it."""
    advice = card["detail"].partition("**Sources:**")[0]
    return [s for s in sentences(advice) if "muscle relaxant" in s.lower() and "avoid" not in s]


@pytest.mark.parametrize("name", ["bilateral-sciatica-old", "association-site-by-bodysite"])
def test_sciatica_management_offers_physical_therapy_and_ibuprofen(client, name):
    card = call(client, name)["sciatica-management"]
    assert card["indicator"] == "info"
    assert orders_of(card, SNOMED, "308447003"), "no physical therapy referral"
    [ibuprofen] = created(card, "MedicationRequest")
    assert "ibuprofen" in str(ibuprofen["medicationCodeableConcept"]).lower()
    assert ibuprofen["status"] == "draft"
    assert _muscle_relaxant_offers(card), "a younger adult may be offered a muscle relaxant"


def test_sciatica_management_for_an_older_adult_cites_beers_and_offers_no_muscle_relaxant(client):
    card = call(client, "management-older-adult")["sciatica-management"]
    assert "Beers" in card["detail"]
    assert _muscle_relaxant_offers(card) == []
    drugs = str([r["medicationCodeableConcept"] for r in created(card, "MedicationRequest")])
    assert not any(relaxant in drugs.lower() for relaxant in MUSCLE_RELAXANTS)


def test_sciatica_management_with_heart_failure_offers_no_nsaid_and_says_why(client):
    card = call(client, "management-nsaid-blocked")["sciatica-management"]
    assert created(card, "MedicationRequest") == []
    assert "heart failure" in card["detail"].lower()
    assert orders_of(card, SNOMED, "308447003"), "physical therapy is still offered"


def test_without_the_heart_failure_the_same_patient_is_offered_ibuprofen(client):
    def drop_heart_failure(request):
        entries = conditions_bundle(request)
        entries[:] = [e for e in entries if e["resource"]["code"]["coding"][0]["code"] != "I50.9"]

    card = call(client, "management-nsaid-blocked", drop_heart_failure)["sciatica-management"]
    assert len(created(card, "MedicationRequest")) == 1
    assert "heart failure" not in card["detail"].lower()


# --- imaging-stewardship --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("imaging-early-select", "ServiceRequest/mri"),
        ("imaging-early-sign", "ServiceRequest/mri"),
        ("imaging-cpt-lbp-sign", "ServiceRequest/mri"),
    ],
)
def test_imaging_stewardship_offers_to_delete_the_ordered_imaging(client, name, order):
    card = call(client, name)["imaging-stewardship"]
    assert card["indicator"] == "warning"
    assert "Imaging is not indicated in the first 6 weeks without red flags" in card["summary"]
    assert deleted(card) == [order]
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert reasons["red-flag-not-recorded"] == "Red flag present but not recorded"
    assert reasons["intervention-candidate"] == "Candidate for intervention (surgery or injection)"
    assert {"already-addressed", "not-applicable", "patient-declined"} <= set(reasons)


# --- nsaid-caution --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nsaid-ckd-select", "nsaid-ckd-sign"])
def test_nsaid_caution_names_the_low_egfr_and_offers_to_delete_the_nsaid(client, name):
    card = call(client, name)["nsaid-caution"]
    assert card["indicator"] == "warning"
    assert "eGFR" in card["summary"]
    assert "eGFR 25 mL/min/1.73 m²" in card["detail"]
    assert deleted(card) == ["MedicationRequest/ibu"]


def test_nsaid_caution_names_the_anticoagulant(client):
    card = call(client, "nsaid-anticoagulant-sign")["nsaid-caution"]
    assert "apixaban" in card["detail"].lower()
    assert deleted(card) == ["MedicationRequest/npx"]


# --- quinine-caution ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quinine-select", "quinine-sign"])
def test_quinine_caution_explains_the_harm_and_offers_to_delete_it(client, name):
    card = call(client, name)["quinine-caution"]
    assert "not recommended for routine" in card["detail"]
    assert "haematological" in card["detail"]
    assert "AAN 2010" in card["detail"]
    assert deleted(card) == ["MedicationRequest/quinine"]


# --- Labs -----------------------------------------------------------------------------------


def test_an_unreadable_potassium_is_named_as_not_interpretable(client):
    card = call(client, "labs-unit-not-interpretable")["cramp-labs-missing"]
    evidence, _, cannot_read = card["detail"].partition("**Could not be read**")
    lines = [line for line in cannot_read.splitlines() if "potassium" in line.lower()]
    assert len(lines) == 1
    # v2: named by the record's name and date, never its resource id
    assert re.fullmatch(r"- Potassium 3(\.0)? mg \(10 Nov\): .*not interpretable.*", lines[0])
    assert "labs-unit-not-interpretable-o0" not in card["detail"]
    assert "Potassium 3" not in evidence


@pytest.mark.parametrize(
    ("name", "lab", "quoted"),
    [
        ("electrolyte-potassium-low", "Potassium", ["3.4 mmol/L"]),
        ("electrolyte-potassium-meq", "Potassium", ["3.4 mEq/L"]),
        ("electrolyte-magnesium-mmol", "Magnesium", ["1.6 mg/dL", "(0.65 mmol/L)"]),
        ("electrolyte-magnesium-mgdl", "Magnesium", ["1.58 mg/dL"]),
        ("electrolyte-calcium-mmol-low", "Calcium", ["8.2 mg/dL", "(2.05 mmol/L)"]),
        ("mixed-three-causes", "Potassium", ["3.1 mmol/L"]),
    ],
)
def test_electrolyte_card_quotes_the_low_value_with_its_unit(client, name, lab, quoted):
    card = call(client, name)["electrolyte-cramp-cause"]
    [line] = [ln for ln in card["detail"].splitlines() if ln.startswith(f"- Low: {lab}")]
    for text in quoted:
        assert text in line


def test_electrolyte_card_for_dehydration_names_the_diagnosis(client):
    card = call(client, "electrolyte-dehydration")["electrolyte-cramp-cause"]
    assert "E86.0" in card["detail"] and "Dehydration" in card["detail"]
    bmp = orders_of(card, LOINC, "24321-2")
    magnesium = orders_of(card, LOINC, "19123-9")
    assert bmp and magnesium


# --- The trigger at note signing ------------------------------------------------------------


def _note(text: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ],
    }


def test_a_signed_note_that_reports_cramps_triggers_the_rules(client):
    def cramps_only_in_the_note(request):
        conditions_bundle(request).clear()
        request["context"]["note"] = _note("Pt c/o cramping in the right calf at night for 2 wk.")

    assert list(call(client, "note-sign-cramps", cramps_only_in_the_note)) == ["cramp-labs-missing"]
