"""Prefetch fallback over HTTP: what the service reads from `fhirServer`, and how it fails.

Absent and OperationOutcome prefetch keys are read from the FHIR server with the bearer token;
`null` keys are not; paged answers are followed on that server only. A required key that can be
had from nowhere ends the request with 412 (an OperationOutcome naming `prefetch.<key>`) within
the deadline; an optional one becomes a gap named in the card detail.

The real FHIR server (sekmet) shows what the service asked for; the fault server produces what
a real server cannot be made to: silence, 5xx, HTML, link loops, redirects.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import DEADLINE_S, load_scenario, outcome_fields, rule_ids, scenario_names
from servers import free_port, send_json

KEYS = ("patient", "conditions", "observations", "medications", "allergies")
REQUIRED_KEYS = ("patient", "conditions", "observations")
TYPE_OF_KEY = {
    "patient": "Patient",
    "conditions": "Condition",
    "observations": "Observation",
    "medications": "MedicationRequest",
    "allergies": "AllergyIntolerance",
}
PATIENT_VIEW = "cramp-sciatica-patient-view"
IN_TIME_S = DEADLINE_S + 1.5
LABS_MISSING = "cramp-labs-missing"


# ---------------------------------------------------------------- helpers


def unique_scenario(name: str) -> tuple[dict, dict, str]:
    """The scenario with its patient renamed to a fresh id, so tests share no server data."""
    request, expected = load_scenario(name)
    old = request["context"]["patientId"]
    new = f"{old}-{uuid.uuid4().hex[:8]}"
    request = json.loads(json.dumps(request).replace(old, new))
    request["hookInstance"] = str(uuid.uuid4())
    return request, expected, new


def resources_of(request: dict, key: str) -> list[dict]:
    value = request["prefetch"][key]
    if value is None:
        return []
    if value["resourceType"] == "Bundle":
        return [entry["resource"] for entry in value.get("entry") or []]
    return [value]


def load_into(fhir_server, request: dict) -> None:
    for key in KEYS:
        for resource in resources_of(request, key):
            fhir_server.put(resource)


def with_server(request: dict, base_url: str | None, token: str | None = None) -> dict:
    request = copy.deepcopy(request)
    if base_url:
        request["fhirServer"] = base_url
    if token:
        request["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Condition.read user/Observation.read",
            "subject": "crampcds",
        }
    return request


def without(request: dict, *keys: str) -> dict:
    request = copy.deepcopy(request)
    for key in keys:
        request["prefetch"].pop(key)
    return request


def new_token() -> str:
    return f"tok-{uuid.uuid4().hex}"


def outcome(text: str, code: str = "processing") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def searchset(resources: list[dict], links: list[dict] | None = None) -> dict:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }
    if links:
        bundle["link"] = links
    return bundle


def queried_types(traffic: list[tuple[str, str, str]], patient_id: str) -> list[str]:
    """The resource type of each GET the FHIR server received about `patient_id`."""
    types = []
    for method, url, _headers in traffic:
        if method == "GET" and patient_id in url:
            path = urlsplit(url).path
            types.append(path.split("/fhir/", 1)[1].split("/")[0])
    return types


def card_details(response) -> str:
    return "\n".join(card.get("detail", "") for card in response.json()["cards"])


class FakeFhir:
    """A handler for the fault server that answers like a FHIR server from a scenario's data.

    `faults` maps a resource type to a handler that misbehaves instead; `pages` maps a resource
    type to a function (handler, bundle) -> bundle that may add links.
    """

    def __init__(self, request: dict, faults=None, pages=None):
        self.by_type: dict[str, list[dict]] = {}
        for key in KEYS:
            for resource in resources_of(request, key):
                self.by_type.setdefault(resource["resourceType"], []).append(resource)
        self.faults = faults or {}
        self.pages = pages or {}
        self.prefix = f"/fake-{uuid.uuid4().hex[:8]}"

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path[len(self.prefix) :].strip("/")
        rtype, _, rid = path.partition("/")
        if rtype in self.faults:
            self.faults[rtype](handler)
            return
        if rid:
            found = [r for r in self.by_type.get(rtype, []) if r["id"] == rid]
            if found:
                send_json(handler, found[0])
            else:
                send_json(handler, outcome(f"{rtype}/{rid} not found", "not-found"), 404)
            return
        bundle = searchset(self.by_type.get(rtype, []))
        if rtype in self.pages:
            bundle = self.pages[rtype](handler, bundle)
        send_json(handler, bundle)


def serve_fake(fault_server, fake: FakeFhir) -> str:
    return fault_server.route(fake.prefix, fake)


def call_timed(client, request: dict, service_id: str = PATIENT_VIEW):
    started = time.monotonic()
    response = client.call(service_id, request)
    return response, time.monotonic() - started


def assert_labs_were_read(response) -> None:
    """The normal labs of `cramps-normal-labs` reached the rules: no labs-missing card."""
    assert response.status_code == 200, response.text
    assert LABS_MISSING not in rule_ids(response)


def assert_412_naming(response, key: str, token: str | None = None) -> None:
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert f"prefetch.{key}" in outcome_fields(response)
    if token:
        assert token not in response.text


# ---------------------------------------------------------------- the real FHIR server


def complete_scenarios() -> list[str]:
    """Examples whose prefetch has every key (the others test a key left out on purpose)."""
    return [n for n in scenario_names() if set(KEYS) <= set(load_scenario(n)[0]["prefetch"])]


@pytest.mark.parametrize("name", complete_scenarios())
def test_absent_prefetch_is_read_from_the_fhir_server_with_the_same_result(
    client, fhir_server, name
):
    request, expected, patient_id = unique_scenario(name)
    load_into(fhir_server, request)
    token = new_token()
    full = client.call(expected["service"], request)
    assert full.status_code == 200, full.text
    assert rule_ids(full) == expected["rule_ids"]

    bare = with_server(request, fhir_server.base_url, token)
    del bare["prefetch"]
    mark = fhir_server.mark()
    response = client.call(expected["service"], bare)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    traffic = fhir_server.requests_since(mark)
    assert sorted(queried_types(traffic, patient_id)) == sorted(TYPE_OF_KEY.values())
    assert all("Bearer ***redacted***" in headers for _m, _u, headers in traffic)


@pytest.mark.parametrize("null_key", KEYS)
def test_a_null_prefetch_key_is_not_fetched_while_absent_ones_are(client, fhir_server, null_key):
    request, _expected, patient_id = unique_scenario("cramps-normal-labs")
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"] = {null_key: None}
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    queried = queried_types(fhir_server.requests_since(mark), patient_id)
    assert TYPE_OF_KEY[null_key] not in queried
    assert sorted(queried) == sorted(TYPE_OF_KEY[k] for k in KEYS if k != null_key)


def test_null_observations_are_not_read_even_when_the_server_has_normal_labs(client, fhir_server):
    request, expected, _patient_id = unique_scenario("cramps-normal-labs")
    assert expected["rule_ids"] == []
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"]["observations"] = None

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert LABS_MISSING in rule_ids(response)


@pytest.mark.parametrize("key", KEYS)
def test_a_prefetched_operation_outcome_is_read_again_from_the_fhir_server(
    client, fhir_server, key
):
    request, expected, patient_id = unique_scenario("cramps-normal-labs")
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"][key] = outcome("the EHR could not run this prefetch query")
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert queried_types(fhir_server.requests_since(mark), patient_id) == [TYPE_OF_KEY[key]]
    assert rule_ids(response) == expected["rule_ids"]


def test_normal_labs_read_after_a_failed_observations_prefetch_silence_the_labs_card(
    client, fhir_server
):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"]["observations"] = outcome("timeout")
    body_offline = copy.deepcopy(body)
    del body_offline["fhirServer"], body_offline["fhirAuthorization"]

    # Without a server to read from, the failed query is a 412 (observations are required).
    assert_412_naming(client.call(PATIENT_VIEW, body_offline), "observations")
    response = client.call(PATIENT_VIEW, body)
    assert response.status_code == 200, response.text
    assert_labs_were_read(response)


def heart_rate(patient_id: str, index: int) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"{patient_id}-hr-{index:02d}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-18T08:00:00Z",
        "valueQuantity": {
            "value": 70 + index,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def test_observation_pages_are_followed_and_a_later_page_is_used(client, fhir_server):
    # sekmet pages searches 20 entries at a time (in the order resources were written), with a
    # `next` link carrying `_count=20&_offset=20`. The normal labs are written after 20 heart
    # rates, so they come back on page 2 only.
    request, _expected, patient_id = unique_scenario("cramps-normal-labs")
    for index in range(20):
        fhir_server.put(heart_rate(patient_id, index))
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    del body["prefetch"]["observations"]
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert_labs_were_read(response)
    observation_gets = [
        (parse_qs(urlsplit(url).query), headers)
        for method, url, headers in fhir_server.requests_since(mark)
        if method == "GET" and "/Observation" in url
    ]
    assert len(observation_gets) == 2
    assert observation_gets[1][0]["_offset"] == ["20"]
    assert all("Bearer ***redacted***" in headers for _q, headers in observation_gets)
    assert "paging stopped" not in card_details(response)


def test_a_prefetched_first_page_is_continued_on_the_fhir_server(client, fhir_server):
    request, _expected, patient_id = unique_scenario("cramps-normal-labs")
    fillers = [heart_rate(patient_id, index) for index in range(2)]
    for resource in fillers:
        fhir_server.put(resource)
    load_into(fhir_server, request)
    query = (
        f"{fhir_server.base_url}/Observation?patient={patient_id}"
        "&category=laboratory,vital-signs,exam,survey"
    )
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"]["observations"] = searchset(
        fillers, [{"relation": "next", "url": f"{query}&_count=2&_offset=2"}]
    )
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert_labs_were_read(response)
    offsets = [
        parse_qs(urlsplit(url).query).get("_offset")
        for method, url, _h in fhir_server.requests_since(mark)
        if method == "GET"
    ]
    assert offsets == [["2"], ["4"]]


def test_the_access_token_is_sent_as_a_bearer_header_and_never_logged(
    client, service, fault_server
):
    request, expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    fake = FakeFhir(request)
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    seen = fault_server.requests_to(fake.prefix)
    assert len(seen) == len(TYPE_OF_KEY)
    assert all(headers.get("Authorization") == f"Bearer {token}" for _path, headers in seen)
    assert token not in response.text
    assert token not in service.log_text()


def test_a_request_without_a_token_sends_no_authorization_header(client, fault_server):
    request, expected, _patient_id = unique_scenario("cramps-only")
    fake = FakeFhir(request)
    body = with_server(request, serve_fake(fault_server, fake))
    del body["prefetch"]

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    seen = fault_server.requests_to(fake.prefix)
    assert len(seen) == len(TYPE_OF_KEY)
    assert not any("Authorization" in headers for _path, headers in seen)


def test_a_fully_prefetched_request_makes_no_fhir_query(client, fhir_server):
    request, expected, _patient_id = unique_scenario("cramps-only")
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    assert fhir_server.requests_since(mark) == []


def test_a_fully_prefetched_request_with_null_keys_makes_no_fhir_query(client, fhir_server):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    load_into(fhir_server, request)
    body = with_server(request, fhir_server.base_url, new_token())
    body["prefetch"]["observations"] = None
    body["prefetch"]["medications"] = None
    mark = fhir_server.mark()

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert fhir_server.requests_since(mark) == []


# ---------------------------------------------------------------- the fault server


def sleep_past_the_deadline(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(DEADLINE_S + 3)
    send_json(handler, searchset([]))


def headers_then_silence(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b'{"resourceType": "Bundle", ')
    handler.wfile.flush()
    time.sleep(DEADLINE_S + 3)


def drip_slower_than_the_deadline(handler: BaseHTTPRequestHandler) -> None:
    """Each byte comes well within the read timeout; the whole answer takes far too long."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.end_headers()
    for _ in range(int((DEADLINE_S + 3) / 0.2)):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.2)
    handler.wfile.write(json.dumps(searchset([])).encode())


def status(code: int, body: object | None = None):
    def handler(h: BaseHTTPRequestHandler) -> None:
        send_json(h, outcome(f"HTTP {code}") if body is None else body, code)

    return handler


def plain(code: int, content_type: str, payload: bytes):
    def handler(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    return handler


def cut_short(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", "5000")
    handler.end_headers()
    handler.wfile.write(b'{"resourceType": "Bundle", "entry": [')
    handler.wfile.flush()
    handler.close_connection = True


FAULTS = {
    "never answers": sleep_past_the_deadline,
    "headers then silence": headers_then_silence,
    "drips slower than the deadline": drip_slower_than_the_deadline,
    "HTTP 500": status(500),
    "HTTP 500 in plain text": plain(500, "text/plain", b"Internal Server Error"),
    "HTTP 503": status(503),
    "HTTP 401": status(401),
    "HTTP 403": status(403),
    "HTML with 200": plain(200, "text/html", b"<html><body>Please log in</body></html>"),
    "JSON that is not FHIR": plain(200, "application/json", b'{"status": "ok"}'),
    "a JSON array": plain(200, "application/json", b"[]"),
    "an OperationOutcome with 200": status(200, outcome("search failed")),
    "a body cut short": cut_short,
    "a redirect": plain(302, "text/plain", b""),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_failing_fhir_server_gives_412_naming_the_key_in_time(
    client, service, fault_server, fault
):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    fake = FakeFhir(request, faults={"Observation": FAULTS[fault]})
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["observations"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert_412_naming(response, "observations", token)
    assert outcome_fields(response) == ["prefetch.observations"]
    assert fault_server.requests_to(fake.prefix), "the FHIR server was never asked"
    assert token not in service.log_text()


def test_the_service_stops_reading_a_dripping_answer_at_the_deadline(client, fault_server):
    # Each byte arrives well within the read timeout. Were the service to keep reading after
    # answering, the dripping server would hold one of its few FHIR worker threads per query.
    request, _expected, _patient_id = unique_scenario("cramps-only")
    hung_up = threading.Event()

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.end_headers()
        try:
            for _ in range(int((DEADLINE_S + 4) / 0.1)):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            hung_up.set()

    fake = FakeFhir(request, faults={"Observation": drip})
    body = with_server(request, serve_fake(fault_server, fake), new_token())
    del body["prefetch"]["observations"]

    started = time.monotonic()
    response = client.call(PATIENT_VIEW, body)

    assert_412_naming(response, "observations")
    assert hung_up.wait(max(0.0, started + IN_TIME_S - time.monotonic()))


def test_a_redirect_is_not_followed_and_the_token_stays_home(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    elsewhere = f"/elsewhere-{uuid.uuid4().hex[:8]}"
    target = fault_server.route(elsewhere, status(200, searchset([])))

    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("Location", f"{target}/Observation")
        h.send_header("Content-Length", "0")
        h.end_headers()

    fake = FakeFhir(request, faults={"Observation": redirect})
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["observations"]

    assert_412_naming(client.call(PATIENT_VIEW, body), "observations", token)
    assert fault_server.requests_to(elsewhere) == []


def test_a_missing_patient_gives_412_naming_the_patient_key(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    fake = FakeFhir(request)
    fake.by_type.pop("Patient")  # the server answers 404 to the Patient read
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["patient"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert_412_naming(response, "patient", token)
    assert outcome_fields(response) == ["prefetch.patient"]
    assert [path.split("?")[0] for path, _h in fault_server.requests_to(fake.prefix)] == [
        f"{fake.prefix}/Patient/{request['context']['patientId']}"
    ]


def test_every_failing_required_key_is_named(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    prefix = f"/down-{uuid.uuid4().hex[:8]}"
    body = with_server(request, fault_server.route(prefix, status(500)), token)
    del body["prefetch"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert response.status_code == 412, response.text
    assert sorted(outcome_fields(response)) == sorted(f"prefetch.{k}" for k in REQUIRED_KEYS)
    assert token not in response.text


def test_a_refused_connection_gives_412_quickly(client):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    body = with_server(request, f"http://127.0.0.1:{free_port()}/fhir", token)
    del body["prefetch"]["conditions"]

    response, elapsed = call_timed(client, body)

    assert elapsed < DEADLINE_S  # a refusal is known at once: no waiting for the deadline
    assert_412_naming(response, "conditions", token)
    assert outcome_fields(response) == ["prefetch.conditions"]


def test_an_error_text_that_echoes_the_token_does_not_reach_the_client(
    client, service, fault_server
):
    request, _expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()

    def echo(h: BaseHTTPRequestHandler) -> None:
        send_json(h, outcome(f"invalid token: {h.headers.get('Authorization')}"), 401)

    fake = FakeFhir(request, faults={"Observation": echo})
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["observations"]

    response = client.call(PATIENT_VIEW, body)

    assert_412_naming(response, "observations", token)
    assert token not in service.log_text()


@pytest.mark.parametrize(
    "fault", ["HTTP 500", "never answers", "HTML with 200"], ids=["500", "silence", "html"]
)
def test_a_failing_optional_key_leaves_a_named_gap_in_the_cards(client, fault_server, fault):
    request, expected, _patient_id = unique_scenario("cramps-only")
    token = new_token()
    fake = FakeFhir(request, faults={"MedicationRequest": FAULTS[fault]})
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert response.status_code == 200, response.text
    assert expected["rule_ids"], "a card is needed to carry the gap"
    assert rule_ids(response) == expected["rule_ids"]
    detail = card_details(response)
    assert "medications" in detail
    assert token not in response.text


def test_an_optional_key_absent_without_a_fhir_server_leaves_a_named_gap(client):
    request, expected, _patient_id = unique_scenario("cramps-only")
    body = without(request, "medications")

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    assert "medications" in card_details(response)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_required_key_absent_without_a_fhir_server_gives_412_naming_it(client, key):
    request, _expected, _patient_id = unique_scenario("cramps-only")

    response = client.call(PATIENT_VIEW, without(request, key))

    assert_412_naming(response, key)
    assert outcome_fields(response) == [f"prefetch.{key}"]


def test_a_next_link_to_the_same_page_ends_with_an_answer(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")

    def loop(h: BaseHTTPRequestHandler, bundle: dict) -> dict:
        bundle["link"] = [{"relation": "next", "url": f"{fault_server.base_url}{h.path}"}]
        return bundle

    fake = FakeFhir(request, pages={"Observation": loop})
    body = with_server(request, serve_fake(fault_server, fake), new_token())
    del body["prefetch"]["observations"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert response.status_code == 200, response.text
    assert_labs_were_read(response)  # the labs on the looping page were used
    assert len(fault_server.requests_to(fake.prefix)) == 1


def test_an_endless_chain_of_next_links_stops_at_the_page_cap(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")
    page = iter(range(1, 10_000))

    def endless(h: BaseHTTPRequestHandler, bundle: dict) -> dict:
        base = f"{fault_server.base_url}{urlsplit(h.path).path}"
        bundle["link"] = [{"relation": "next", "url": f"{base}?page={next(page)}"}]
        return bundle

    fake = FakeFhir(request, pages={"Observation": endless})
    body = with_server(request, serve_fake(fault_server, fake), new_token())
    del body["prefetch"]["observations"]

    response, elapsed = call_timed(client, body)

    assert elapsed < IN_TIME_S
    assert response.status_code == 200, response.text
    assert_labs_were_read(response)
    assert 1 < len(fault_server.requests_to(fake.prefix)) <= 20


def test_a_failing_later_page_keeps_what_the_earlier_pages_gave(client, fault_server):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")
    fake = FakeFhir(request)

    def first_page_then_failure(h: BaseHTTPRequestHandler) -> None:
        if "page=2" in h.path:
            send_json(h, outcome("database unavailable"), 500)
            return
        next_url = f"{fault_server.base_url}{fake.prefix}/Observation?page=2"
        send_json(
            h, searchset(fake.by_type["Observation"], [{"relation": "next", "url": next_url}])
        )

    fake.faults["Observation"] = first_page_then_failure
    body = with_server(request, serve_fake(fault_server, fake), new_token())
    del body["prefetch"]["observations"]

    response = client.call(PATIENT_VIEW, body)

    assert_labs_were_read(response)
    observation_paths = [
        path for path, _h in fault_server.requests_to(f"{fake.prefix}/Observation")
    ]
    assert len(observation_paths) == 2 and "page=2" in observation_paths[1]


def test_a_prefetched_first_page_without_a_fhir_server_names_the_unread_pages(client):
    request, expected, _patient_id = unique_scenario("cramps-only")
    request["prefetch"]["observations"] = searchset(
        [], [{"relation": "next", "url": "https://ehr.example.org/fhir/Observation?page=2"}]
    )

    response = client.call(PATIENT_VIEW, request)

    assert response.status_code == 200, response.text
    assert expected["rule_ids"], "a card is needed to carry the gap"
    assert rule_ids(response) == expected["rule_ids"]
    assert "observations" in card_details(response)


class OtherHost:
    """A listener on 127.0.0.2 that records what reaches it."""

    def __init__(self):
        self.seen: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.seen.append((self.path, dict(self.headers)))
                send_json(self, searchset([]))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.2:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def other_host():
    host = OtherHost()
    yield host
    host.close()


def test_a_next_link_to_another_host_is_not_followed(client, fault_server, other_host):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")
    token = new_token()

    def away(_h: BaseHTTPRequestHandler, bundle: dict) -> dict:
        bundle["link"] = [{"relation": "next", "url": f"{other_host.base_url}/fhir/Observation"}]
        return bundle

    fake = FakeFhir(request, pages={"Observation": away})
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["observations"]

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert_labs_were_read(response)  # the first page's labs were used
    assert other_host.seen == []
    assert token not in response.text


@pytest.mark.parametrize("where", ["localhost", "a sibling path", "a parent path"])
def test_a_next_link_outside_the_fhir_base_is_not_followed(client, fault_server, where):
    request, _expected, _patient_id = unique_scenario("cramps-normal-labs")
    token = new_token()
    fake = FakeFhir(request)
    port = urlsplit(fault_server.base_url).port
    marker = f"leak={uuid.uuid4().hex}"
    outside = {
        "localhost": f"http://localhost:{port}{fake.prefix}/Observation?{marker}",
        "a sibling path": f"{fault_server.base_url}{fake.prefix}-evil/Observation?{marker}",
        "a parent path": f"{fault_server.base_url}{fake.prefix}/../evil/Observation?{marker}",
    }[where]
    fake.pages["Observation"] = lambda _h, bundle: {
        **bundle,
        "link": [{"relation": "next", "url": outside}],
    }
    body = with_server(request, serve_fake(fault_server, fake), token)
    del body["prefetch"]["observations"]

    response = client.call(PATIENT_VIEW, body)

    assert response.status_code == 200, response.text
    assert_labs_were_read(response)
    assert not [path for path, _h in fault_server.seen if marker in path]
