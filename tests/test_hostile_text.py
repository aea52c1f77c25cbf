"""Issue 13, over HTTP against the served workers: hostile text neither hangs a worker nor
slips past the note reader.

Points 1 and 8: the inputs that took seconds to minutes in a regular expression (the note's
base64 data, `fhirServer`, the note reader's sentence split and slash tokenising, the console's
markdown) are answered within a generous bound, and `/health` answers meanwhile; zero-width,
bidi and look-alike characters do not defeat negation; a note over the reader's limit says so
on the card.
"""

from __future__ import annotations

import base64
import copy
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import check_answer, load_scenario, outcome_fields, rule_ids

NOTE_SERVICE = "cramp-sciatica-note-sign"
BOUND_S = 8.0  # generous: each answers in well under a second on an idle machine


def note_request(text: str | None = None, data: str | None = None) -> dict:
    """A note-sign request without coded data (a note reporting cramps gets the labs card)."""
    request = copy.deepcopy(load_scenario("note-sign-cramps-in-note-only")[0])
    attachment = request["context"]["note"]["content"][0]["attachment"]
    attachment["data"] = data if data is not None else base64.b64encode(text.encode()).decode()
    return request


def timed(call):
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def post(service, path: str, body: dict, timeout: float = BOUND_S) -> requests.Response:
    return requests.post(f"{service.base_url}{path}", json=body, timeout=timeout)


def call(service, request: dict, timeout: float = BOUND_S) -> requests.Response:
    """The note-sign hook, within a bound (the answer checked as CdsClient checks it)."""
    response = post(service, f"/cds-services/{NOTE_SERVICE}", request, timeout)
    check_answer(response, "response")
    return response


def health_while(service, calls) -> list[float]:
    """Runs the calls at once and asks /health meanwhile: how long each /health took."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        time.sleep(0.2)
        took = []
        for _ in range(3):
            _, seconds = timed(lambda: requests.get(f"{service.base_url}/health", timeout=5))
            took.append(seconds)
        for future in futures:
            future.result()
    return took


# --- point 1: no regular expression slows with the square of the input -------------------


def test_base64_data_of_80000_spaces_and_a_bang_is_refused_at_once(service):
    request = note_request(data=" " * 80_000 + "!")
    response, took = timed(lambda: call(service, request, BOUND_S))
    assert response.status_code == 400
    assert any(field.endswith("attachment.data") for field in outcome_fields(response)), (
        response.text
    )
    assert took < BOUND_S


def test_two_such_requests_at_once_leave_health_answering(service):
    path = f"/cds-services/{NOTE_SERVICE}"
    request = note_request(data=" " * 80_000 + "!")
    took = health_while(service, [lambda: post(service, path, request)] * 2)
    assert max(took) < 2.0, took


def test_a_long_fhir_server_url_that_fails_late_is_refused_at_once(service):
    request = note_request("Pt c/o cramps.")
    request["fhirServer"] = "http://" + "a" * 80_000 + " "
    response, took = timed(lambda: call(service, request, BOUND_S))
    assert response.status_code == 400
    assert "fhirServer" in outcome_fields(response)
    assert took < BOUND_S


@pytest.mark.parametrize(
    "text",
    [
        "." * 99_999 + "a",  # the sentence split
        "a/" * 49_999,  # slash tokenising
        "!?" * 50_000 + "x",
        " " * 80_000 + "!",
        "Dr. " * 25_000,  # the abbreviation look-back
        "  - x" + " " * 80_000 + "!",  # the section header pattern
    ],
    ids=["dots", "slashes", "marks", "spaces", "dr-dot", "header"],
)
def test_hostile_note_text_is_read_within_the_bound(service, text):
    response, took = timed(lambda: call(service, note_request(text), BOUND_S))
    assert response.status_code == 200, response.text
    assert took < BOUND_S


@pytest.mark.parametrize(
    "detail",
    ["**a " * 20_000, "[" * 80_000, "*" * 80_000, "`" * 80_000, "*a " * 25_000],
    ids=["bold", "brackets", "stars", "backticks", "italic"],
)
def test_console_markdown_of_80_kb_renders_within_the_bound(service, detail):
    body = {
        "service": "cramp-sciatica-patient-view",
        "response": {"cards": [{"summary": "s", "indicator": "info", "detail": detail}]},
    }
    response, took = timed(lambda: post(service, "/console/render", body))
    assert response.status_code == 200
    assert took < BOUND_S


# --- point 8: what the note reader reads -----------------------------------------------------


def test_a_note_reporting_cramps_fires_the_labs_card(client):
    assert rule_ids(client.call(NOTE_SERVICE, note_request("Pt reports cramps."))) == [
        "cramp-labs-missing"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Pt de\u200bnies cramps.",  # zero-width space
        "Pt de\u200dnies cramps.",  # zero-width joiner
        "Pt \u202edenies\u202c cramps.",  # bidi override
        "Pt d\u0435nies cramps.",  # Cyrillic е
        "Pt \u0434enies cramps.".replace("\u0434", "d"),  # control: plain
        "Pt ｄｅｎｉｅｓ cramps.",  # full-width letters (NFKC)
        "Pt n\u043e cramps.",  # Cyrillic о in "no"
    ],
    ids=["zwsp", "zwj", "bidi", "cyrillic-e", "plain", "fullwidth", "cyrillic-o"],
)
def test_invisible_and_look_alike_characters_do_not_defeat_negation(client, text):
    assert rule_ids(client.call(NOTE_SERVICE, note_request(text))) == []


def test_look_alike_letters_in_the_symptom_are_read(client):
    text = "Pt reports \u0441r\u0430mps in the right calf."  # Cyrillic с and а
    assert rule_ids(client.call(NOTE_SERVICE, note_request(text))) == ["cramp-labs-missing"]


def test_a_soft_hyphen_in_the_symptom_does_not_hide_it(client):
    text = "Pt reports cr\u00adamps in the right calf."
    assert rule_ids(client.call(NOTE_SERVICE, note_request(text))) == ["cramp-labs-missing"]


def test_no_bidi_control_reaches_a_card(client):
    text = "Pt reports cramping\u202e in the right calf\u200b at night."
    response = client.call(NOTE_SERVICE, note_request(text))
    assert rule_ids(response) == ["cramp-labs-missing"]
    card = response.json()["cards"][0]
    assert "\u202e" not in str(card) and "\u200b" not in str(card)


def test_a_cramp_mention_past_the_limit_of_a_long_note_is_read(service):
    filler = "Routine review, nothing further to add today.\n"
    text = filler * (110_000 // len(filler)) + "\nPt reports cramping in the right calf.\n"
    response, took = timed(lambda: call(service, note_request(text), 30))
    assert rule_ids(response) == ["cramp-labs-missing"]
    assert "read only in part" not in response.json()["cards"][0]["detail"]
    assert took < BOUND_S


def test_a_note_naming_symptoms_everywhere_past_the_limit_is_read_in_part_and_says_so(service):
    filler = "Routine review, nothing further to add today.\n"
    symptoms = "Denies cramps.\n\n" * 8_000  # more text naming a symptom than is read
    text = "Pt reports cramping in the right calf.\n" + filler * (110_000 // len(filler))
    response, took = timed(lambda: call(service, note_request(text + symptoms), 30))
    assert rule_ids(response) == ["cramp-labs-missing"]
    assert "it was read only in part" in response.json()["cards"][0]["detail"]
    assert took < BOUND_S
