"""The note-signing hook over HTTP (issue 6): what the draft note's text says fires the catalog's
cards like coded data, with the words quoted; negated, past, hypothetical, family and uncertain
mentions do not fire; cards offer to add what the note says to the problem list.
"""

from __future__ import annotations

import base64
import copy
import re

import pytest
from conftest import load_scenario, rule_ids
from fhir.resources.R4B import get_fhir_model_class

NOTE_SERVICE = "cramp-sciatica-note-sign"
RED_FLAGS = {"cauda-equina-red-flag", "motor-deficit-red-flag", "serious-pathology-red-flag"}
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
QUOTE = re.compile(r"“(.*?)”")


def note_request(text: str, conditions: tuple[dict, ...] = (), labs: bool = True) -> dict:
    """A note-sign request: this note, these coded conditions, normal labs (or none)."""
    base = "note-sign-red-flags-negated" if labs else "note-sign-cramps-in-note-only"
    request = copy.deepcopy(load_scenario(base)[0])
    attachment = request["context"]["note"]["content"][0]["attachment"]
    attachment["data"] = base64.b64encode(text.encode()).decode()
    request["prefetch"]["conditions"]["entry"] = [{"resource": c} for c in conditions]
    return request


def patient_of(request: dict) -> str:
    return f"Patient/{request['context']['patientId']}"


def coded(request_patient: str, cid: str, system: str, code: str, display: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": request_patient},
        "onsetDateTime": "2026-11-18",
    }


def cards_for(client, request: dict) -> dict[str, dict]:
    response = client.call(NOTE_SERVICE, request)
    assert response.status_code == 200, response.text
    return {card["source"]["topic"]["code"]: card for card in response.json()["cards"]}


def conditions_offered(card: dict) -> list[dict]:
    return [
        action["resource"]
        for suggestion in card.get("suggestions") or []
        for action in suggestion["actions"]
        if action["type"] == "create" and action["resource"]["resourceType"] == "Condition"
    ]


def codes(resource: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["code"].get("coding", [])}


# --- Trigger 4: cramps only in the note -----------------------------------------------------


def test_cramps_written_only_in_the_note_trigger_the_rules(client):
    request = note_request("HPI: pt c/o cramping in the right calf at night x 2 wk.", labs=False)
    cards = cards_for(client, request)
    assert list(cards) == ["cramp-labs-missing"]
    card = cards["cramp-labs-missing"]
    # v2: the reported cramps are quoted on the association card only; this card says the note
    # was read and offers to code the cramps it reports.
    assert "read in the draft note being signed" in card["detail"]
    assert "cramping in the right calf" not in card["detail"]
    (cramp,) = conditions_offered(card)
    assert (SNOMED, "55300003") in codes(cramp)
    assert cramp["code"]["text"] == "Muscle cramps (right calf)"


def test_cramps_in_the_note_are_quoted_on_the_association_card(client):
    text = "HPI: pt c/o cramping in the right calf at night x 2 wk. Right sciatica."
    detail = cards_for(client, note_request(text))["cramp-sciatica-association"]["detail"]
    [line] = [ln for ln in detail.splitlines() if ln.startswith("- Cramps reported: “")]
    assert "cramping in the right calf" in line
    assert "(draft note, not yet coded, 20 Nov)" in line


@pytest.mark.parametrize(
    "text",
    [
        "Denies cramps.",
        "No cramping.",
        "History of leg cramps, none this year.",
        "Return if cramps recur.",
        "Mother has leg cramps.",
        "Possible cramps.",
        "Abdominal cramps after meals.",
    ],
)
def test_cramps_that_are_not_current_trigger_nothing(client, text):
    assert cards_for(client, note_request(text, labs=False)) == {}


# --- A red flag from the note alone fires the same card as a coded one ----------------------


@pytest.mark.parametrize(
    ("text", "rule", "indicator"),
    [
        (
            "Low back pain for 2 weeks. New urinary retention since this morning. Calf cramps.",
            "cauda-equina-red-flag",
            "critical",
        ),
        (
            "Sciatica. One episode of faecal incontinence yesterday. pt c/o leg cramps.",
            "cauda-equina-red-flag",
            "critical",
        ),
        ("LBP. Numbness in the saddle area. Pt c/o cramps.", "cauda-equina-red-flag", "critical"),
        (
            "Pt c/o cramps. Sciatica, now with pain down both legs.",
            "cauda-equina-red-flag",
            "critical",
        ),
        ("Cramps in the calves. Cauda equina syndrome.", "cauda-equina-red-flag", "critical"),
        (
            "h/o sciatica, now with new urinary incontinence; calf cramps.",
            "cauda-equina-red-flag",
            "critical",
        ),
        ("Right sciatica, right foot drop. Calf cramps.", "motor-deficit-red-flag", "warning"),
        (
            "Sciatica; new weakness of the left leg. Cramps in the left calf.",
            "motor-deficit-red-flag",
            "warning",
        ),
        ("Sciatica. Bilateral foot drop. Cramps.", "motor-deficit-red-flag", "critical"),
        (
            "Low back pain with fevers for 3 days. Cramps at night.",
            "serious-pathology-red-flag",
            "warning",
        ),
        (
            "Back pain and unintentional weight loss of 6 kg. Leg cramps.",
            "serious-pathology-red-flag",
            "warning",
        ),
    ],
)
def test_a_red_flag_written_only_in_the_note_fires(client, text, rule, indicator):
    cards = cards_for(client, note_request(text))
    assert rule in cards, list(cards)
    assert cards[rule]["indicator"] == indicator
    assert "in the draft note" in cards[rule]["detail"]


@pytest.mark.parametrize(
    ("text", "fired"),
    [
        ("Low back pain; new urinary retention since last night.", ["cauda-equina-red-flag"]),
        ("Right sciatica, right foot drop.", []),
        ("Low back pain with fevers for 3 days.", []),
    ],
)
def test_without_reported_cramps_only_cauda_equina_fires(client, text, fired):
    """v2 safety exception: cauda equina is evaluated whether or not cramps are reported; the
    other rules still wait for the cramps."""
    assert list(cards_for(client, note_request(text))) == fired


def test_the_note_fires_the_same_critical_card_as_coded_data(client):
    """Cauda equina from the note alone and from coded data (scenario cauda-equina-retention):
    the same call to action, indicator, links, override reasons and orders; v2 summaries then
    name the decisive finding, here the coded record or the note."""
    request, expected = load_scenario("cauda-equina-retention")
    coded_card = {
        c["source"]["topic"]["code"]: c
        for c in client.call(expected["service"], request).json()["cards"]
    }["cauda-equina-red-flag"]
    note_card = cards_for(
        client, note_request("Low back pain; new urinary retention since last night. Cramps.")
    )["cauda-equina-red-flag"]
    for key in ("indicator", "source", "links", "overrideReasons", "selectionBehavior"):
        assert note_card[key] == coded_card[key], key
    urgent = "Suspected cauda equina syndrome: emergency assessment now. "
    assert coded_card["summary"].startswith(urgent)
    assert note_card["summary"] == urgent + "New bladder or bowel change in the draft note (20 Nov)"

    def orders(card):
        return [
            (a["resource"]["code"]["coding"][0]["code"], a["resource"].get("priority"))
            for s in card["suggestions"]
            for a in s["actions"]
            if a["resource"]["resourceType"] == "ServiceRequest"
        ]

    assert orders(note_card) == orders(coded_card)


# --- What must not fire ---------------------------------------------------------------------

CURRENT = "Pt c/o cramps in the right calf. Low back pain and right sciatica for 3 weeks. "


@pytest.mark.parametrize(
    "text",
    [
        "Denies urinary retention, saddle numbness or bowel incontinence.",
        "No bladder or bowel incontinence. No saddle anaesthesia.",
        "Negative for fever and weight loss.",
        "Afebrile. Cauda equina syndrome ruled out.",
        "No foot drop, no leg weakness.",
        "History of urinary retention after surgery in 2015.",
        "Previous left foot drop, recovered.",
        "PMH: cauda equina syndrome decompressed 2012.",
        "Return precautions: saddle numbness, incontinence, leg weakness, fever.",
        "Should he develop urinary retention or saddle numbness, go to the ED.",
        "Return if weakness or foot drop develops.",
        "Mother has cauda equina syndrome.",
        "Family history:\nFather: foot drop, weight loss, bilateral sciatica.",
        "Possible urinary retention, bladder scan pending.",
        "?cauda equina, low suspicion.",
        "Cannot rule out early foot drop.",
        "Numbness in the fingers of both hands (carpal tunnel).",
    ],
    ids=lambda text: text[:40],
)
def test_mentions_that_are_not_current_fire_no_red_flag(client, text):
    cards = cards_for(client, note_request(CURRENT + text))
    assert not RED_FLAGS & set(cards), list(cards)
    assert "cramp-sciatica-association" in cards


def test_an_uncertain_mention_is_supporting_evidence_on_a_card_that_fired(client):
    request = note_request("Back pain. Possible saddle numbness. Cramps.")
    request["prefetch"]["conditions"]["entry"] = [
        {
            "resource": coded(
                patient_of(request), "ret", ICD10CM, "R33.9", "Retention of urine, unspecified"
            )
        }
    ]
    card = cards_for(client, request)["cauda-equina-red-flag"]
    assert (
        "- Uncertain in the note: “Possible saddle numbness” (uncertain in the draft note, "
        in (card["detail"])
    )
    # the uncertain mention is evidence only: never offered for the problem list
    assert not any(
        ("http://hl7.org/fhir/sid/icd-10-cm", "R20.0") in codes(c) for c in conditions_offered(card)
    )


def test_possible_numbness_supports_the_association(client):
    cards = cards_for(client, note_request("Left sciatica; left calf cramps. Possible numbness."))
    card = cards["cramp-sciatica-association"]
    assert card["indicator"] == "warning"
    assert (
        "- Nerve symptom: “Possible numbness” (uncertain in the draft note, 20 Nov)"
        in (card["detail"])
    )
    assert not RED_FLAGS & set(cards)


# --- Quoted evidence -----------------------------------------------------------------------


def test_the_card_quotes_the_words_and_says_they_are_not_yet_coded(client):
    text = "Subjective: pt c/o cramps. Sciatica with new urinary retention since 6 am."
    card = cards_for(client, note_request(text))["cauda-equina-red-flag"]
    detail = card["detail"]
    [line] = [ln for ln in detail.splitlines() if ln.startswith("- New bladder or bowel change: “")]
    assert "urinary retention" in " ".join(QUOTE.findall(line))
    assert line.endswith("(draft note, not yet coded, 20 Nov)")
    assert "read in the draft note being signed" in detail


def test_quotes_are_short_and_never_the_whole_note(client):
    padding = " ".join(
        f"Line {i}: reviewed medications and allergies, no changes." for i in range(40)
    )
    retention = (
        "He then described, after a long walk to the shops and back with his dog on a wet "
        "Tuesday afternoon, new urinary retention that started while he was carrying the "
        "heavy shopping bags up three flights of stairs to his flat."
    )
    text = f"{padding}\nLow back pain. Calf cramps.\n{retention}\n{padding}"
    detail = cards_for(client, note_request(text))["cauda-equina-red-flag"]["detail"]
    quotes = QUOTE.findall(detail)
    assert quotes and all(len(q) <= 122 for q in quotes), quotes
    assert any("urinary retention" in q and q.startswith("…") for q in quotes)
    assert padding not in detail and retention not in detail


def test_quoted_markdown_is_escaped(client):
    text = "Pt c/o cramps [see](https://example.org/x) **now**. <b>Sciatica</b>."
    detail = cards_for(client, note_request(text))["cramp-sciatica-association"]["detail"]
    assert "[see](" not in detail and "<b>" not in detail and "**now**" not in detail
    assert "\\[see\\]" in detail


def test_the_service_does_not_log_the_note(client, service):
    marker = "ZEBRA-QUOKKA-7731"
    cards_for(client, note_request(f"{marker} pt c/o cramps, urinary retention, LBP."))
    assert marker not in service.log_text()


# --- The problem-list suggestion -------------------------------------------------------------


def test_a_red_flag_card_offers_to_add_the_findings_as_provisional_conditions(client):
    request = note_request("Low back pain; new urinary retention and saddle numbness. Cramps.")
    card = cards_for(client, request)["cauda-equina-red-flag"]
    offered = conditions_offered(card)
    assert offered
    for resource in offered:
        get_fhir_model_class("Condition").model_validate(resource)
        assert resource["verificationStatus"]["coding"][0]["code"] in {"provisional", "unconfirmed"}
        assert resource["clinicalStatus"]["coding"][0]["code"] == "active"
        assert resource["subject"] == {"reference": patient_of(request)}
        assert resource["category"][0]["coding"][0]["code"] == "problem-list-item"
    all_codes = set().union(*(codes(r) for r in offered))
    assert {(SNOMED, "267064002"), (SNOMED, "279039007")} <= all_codes
    saddle = [r for r in offered if (ICD10CM, "R20.0") in codes(r)]
    assert saddle and "saddle" in saddle[0]["code"]["text"].lower()
    suggestion = next(s for s in card["suggestions"] if "problem list" in s["label"])
    assert all("provisional" in a["description"] for a in suggestion["actions"])


def test_a_finding_without_a_catalog_code_is_evidence_only(client):
    """ "Bladder changes" has no single catalog code: quoted, never offered as a Condition."""
    card = cards_for(client, note_request("Low back pain; new bladder changes. Cramps."))[
        "cauda-equina-red-flag"
    ]
    [line] = [
        ln
        for ln in card["detail"].splitlines()
        if ln.startswith("- New bladder or bowel change: “")
    ]
    assert "bladder changes" in line and line.endswith("(draft note, not yet coded, 20 Nov)")
    offered = conditions_offered(card)
    assert all(r["code"].get("coding") for r in offered)
    assert not any("bladder" in r["code"]["text"].lower() for r in offered)


def test_the_cramp_condition_names_its_site_and_side(client):
    card = cards_for(client, note_request("Pt c/o cramps in the left calf.", labs=False))[
        "cramp-labs-missing"
    ]
    (cramp,) = conditions_offered(card)
    assert (SNOMED, "55300003") in codes(cramp)
    assert cramp["bodySite"] == [{"text": "left calf"}]
    assert cramp["code"]["text"] == "Muscle cramps (left calf)"


def test_nothing_already_coded_is_offered_again(client):
    request = note_request("Sciatica; new urinary retention. Cramps.")
    request["prefetch"]["conditions"]["entry"] = [
        {"resource": coded(patient_of(request), "ret", SNOMED, "267064002", "Retention of urine")}
    ]
    card = cards_for(client, request)["cauda-equina-red-flag"]
    assert not any((SNOMED, "267064002") in codes(r) for r in conditions_offered(card))
    assert any((SNOMED, "23056005") in codes(r) for r in conditions_offered(card))
    # the note's words are still quoted, as coded in the record rather than "not yet coded"
    assert (
        "- New bladder or bowel change: “new urinary retention” (draft note, 20 Nov)"
        in (card["detail"])
    )


def test_each_finding_is_offered_once_per_response(client):
    cards = cards_for(client, note_request("Right sciatica with bilateral foot drop. Cramps."))
    assert {"cauda-equina-red-flag", "motor-deficit-red-flag"} <= set(cards)
    offered = [codes(r) for card in cards.values() for r in conditions_offered(card)]
    sciatica = [c for c in offered if (SNOMED, "23056005") in c]
    assert len(sciatica) == 1
    foot_drop = [c for c in offered if (SNOMED, "6077001") in c]
    assert len(foot_drop) == 1


def test_a_note_without_findings_changes_nothing(client):
    request, expected = load_scenario("note-sign-cramps")
    request = copy.deepcopy(request)
    attachment = request["context"]["note"]["content"][0]["attachment"]
    attachment["data"] = base64.b64encode(b"Routine review. Discussed diet.").decode()
    response = client.call(expected["service"], request)
    assert rule_ids(response) == expected["rule_ids"]
    assert "draft note" not in response.text
