"""The HTTP API as a CDS client meets it: discovery, every hook, and how bad requests are refused.

Every call goes over HTTP to the service running under gunicorn (the `service` fixture).
"""

from __future__ import annotations

import copy
import json
import uuid
from urllib.parse import parse_qs

import pytest
from conftest import check_answer, load_scenario, outcome_fields, rule_ids, scenario_names

HOOKS = {"patient-view", "order-select", "order-sign", "dev.crampcds.note-sign"}
FIVE_MB = 5 * 1024 * 1024


def _services(client) -> list[dict]:
    response = client.discover()
    assert response.status_code == 200
    return response.json()["services"]


def _service_for(client, hook: str) -> str:
    return next(s["id"] for s in _services(client) if s["hook"] == hook)


def _queries(prefetch: dict[str, str]) -> list[tuple[str, dict[str, list[str]]]]:
    """Each prefetch template as (resource type or read path, its search parameters)."""
    queries = []
    for template in prefetch.values():
        path, _, query = template.partition("?")
        queries.append((path, parse_qs(query)))
    return queries


# --- Discovery ------------------------------------------------------------------------------


def test_discovery_lists_exactly_one_service_per_hook(client):
    services = _services(client)
    hooks = [s["hook"] for s in services]
    assert sorted(hooks) == sorted(HOOKS)
    assert len({s["id"] for s in services}) == len(services)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_service_describes_itself_and_prefetches_all_the_rules_read(client, hook):
    service = next(s for s in _services(client) if s["hook"] == hook)
    assert service["id"] and service["title"] and service["description"]
    queries = _queries(service["prefetch"])

    assert ("Patient/{{context.patientId}}", {}) in queries
    conditions = [params for path, params in queries if path == "Condition"]
    assert conditions, "no Condition prefetch"
    # Every category: a cramp or sciatica may be a problem-list item or an encounter diagnosis.
    assert all("category" not in params for params in conditions)
    assert all(params.get("patient") == ["{{context.patientId}}"] for params in conditions)
    categories = {
        category
        for path, params in queries
        if path == "Observation" and params.get("patient") == ["{{context.patientId}}"]
        for value in params.get("category", [])
        for category in value.split(",")
    }
    assert {"laboratory", "vital-signs", "exam", "survey"} <= categories
    assert any(
        path == "MedicationRequest" and params.get("patient") == ["{{context.patientId}}"]
        for path, params in queries
    )


# --- Every hook -----------------------------------------------------------------------------


def test_the_example_scenarios_exercise_every_hook():
    assert {load_scenario(name)[0]["hook"] for name in scenario_names()} == HOOKS


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_gets_exactly_its_expected_cards(client, name):
    request, expected = load_scenario(name)
    assert _service_for(client, request["hook"]) == expected["service"]

    response = client.call(expected["service"], request)

    assert response.status_code == 200
    # In card order (critical, warning, info), each with the indicator the catalog gives it.
    assert rule_ids(response) == expected["rule_ids"]
    indicators = [card["indicator"] for card in response.json()["cards"]]
    assert indicators == expected["indicators"]


@pytest.mark.parametrize("name", [n for n in scenario_names() if load_scenario(n)[1]["rule_ids"]])
def test_every_card_carries_its_own_uuid(client, name):
    request, expected = load_scenario(name)
    cards = client.call(expected["service"], request).json()["cards"]
    uuids = [uuid.UUID(card["uuid"].removeprefix("urn:uuid:")) for card in cards]
    assert len(set(uuids)) == len(cards)


def test_the_same_hook_instance_gets_the_same_card_uuids(client):
    request, expected = load_scenario("cramps-only")
    first = client.call(expected["service"], request).json()["cards"]
    again = client.call(expected["service"], copy.deepcopy(request)).json()["cards"]
    assert first and [c["uuid"] for c in first] == [c["uuid"] for c in again]


def test_a_new_hook_instance_gets_new_card_uuids(client):
    # Feedback names a card by uuid: two invocations must not share one.
    request, expected = load_scenario("cramps-only")
    first = client.call(expected["service"], request).json()["cards"]
    request["hookInstance"] = str(uuid.uuid4())
    other = client.call(expected["service"], request).json()["cards"]
    assert first and other
    assert not {c["uuid"] for c in first} & {c["uuid"] for c in other}


# --- Bad requests ---------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}


def _pv() -> dict:
    return load_scenario("cramps-only")[0]


def _without(name: str, *path: str | int) -> dict:
    request = load_scenario(name)[0]
    target = request
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return request


def _with(request: dict, **fields) -> dict:
    return {**request, **fields}


def _bytes(request: object) -> bytes:
    return json.dumps(request).encode()


def _padded(size: int) -> bytes:
    """A valid hook request of more than `size` bytes."""
    request = _pv()
    request["context"]["padding"] = "x" * size
    return _bytes(request)


PV = "cramp-sciatica-patient-view"
OSEL = "cramp-sciatica-order-select"
OSIGN = "cramp-sciatica-order-sign"
NOTE = "cramp-sciatica-note-sign"
AUTH = {
    "access_token": "secret-token",
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "patient/*.read",
    "subject": "cds-service",
}

# (case id, service id, body bytes, headers, status, the field the OperationOutcome names)
BAD_REQUESTS = [
    ("malformed-json", PV, b"{hook: patient-view}", JSON, 400, "body"),
    ("truncated-json", PV, _bytes(_pv())[:200], JSON, 400, "body"),
    ("empty-body", PV, b"", JSON, 400, "body"),
    ("json-array-body", PV, _bytes([_pv()]), JSON, 400, "body"),
    ("content-type-text-plain", PV, _bytes(_pv()), {"Content-Type": "text/plain"}, 415,
     "Content-Type"),
    ("no-content-type", PV, _bytes(_pv()), {}, 415, "Content-Type"),
    ("hook-not-of-this-service", PV, _bytes(load_scenario("order-sign-cramp-reason")[0]), JSON,
     400, "hook"),
    ("missing-hookInstance", PV, _bytes(_without("cramps-only", "hookInstance")), JSON, 400,
     "hookInstance"),
    ("hookInstance-not-a-uuid", PV, _bytes(_with(_pv(), hookInstance="visit-42")), JSON, 400,
     "hookInstance"),
    ("missing-patientId", PV, _bytes(_without("cramps-only", "context", "patientId")), JSON,
     400, "context.patientId"),
    ("order-sign-without-draftOrders", OSIGN,
     _bytes(_without("order-sign-cramp-reason", "context", "draftOrders")), JSON, 400,
     "context.draftOrders"),
    ("order-select-without-selections", OSEL,
     _bytes(_without("order-select-cramps", "context", "selections")), JSON, 400,
     "context.selections"),
    ("note-without-attachment-data", NOTE,
     _bytes(_without("note-sign-cramps", "context", "note", "content", 0, "attachment", "data")),
     JSON, 400, "context.note.content[0].attachment.data"),
    ("fhirAuthorization-without-fhirServer", PV, _bytes(_with(_pv(), fhirAuthorization=AUTH)),
     JSON, 400, "fhirServer"),
    ("prefetch-value-a-string", PV,
     _bytes(_with(_pv(), prefetch={**_pv()["prefetch"], "patient": "Patient/cramps-only"})),
     JSON, 400, "prefetch.patient"),
    ("unknown-service", "no-such-service", _bytes(_pv()), JSON, 404, "id"),
    ("body-over-5-MB", PV, _padded(FIVE_MB), JSON, 413, "body"),
    ("not-utf-8", PV, _bytes(_pv()).replace(b"Example", b"Exampl\xe9"), JSON, 400, "body"),
    ("100000-nested-arrays", PV, b"[" * 100_000 + b"]" * 100_000, JSON, 400, "body"),
    ("100000-nested-objects", PV, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, 400,
     "body"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("service_id", "body", "headers", "status", "field"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_refused_naming_the_field(client, service_id, body, headers, status, field):
    response = client.http.post(
        f"{client.base_url}/cds-services/{service_id}", data=body, headers=headers, timeout=30
    )
    check_answer(response, None)
    assert response.status_code == status, response.text
    assert field in outcome_fields(response), response.text


def test_a_chunked_body_over_5_mb_is_refused_as_too_large(client):
    # Without Content-Length the limit must still hold, and must not cut the body short and
    # then blame the client for invalid JSON.
    body = _padded(FIVE_MB)

    def chunks():
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    response = client.http.post(
        f"{client.base_url}/cds-services/{PV}", data=chunks(), headers=JSON, timeout=30
    )
    check_answer(response, None)
    assert response.status_code == 413, response.text
    assert "body" in outcome_fields(response)


def test_a_chunked_body_under_the_limit_is_answered(client):
    body = _bytes(_pv())
    response = client.http.post(
        f"{client.base_url}/cds-services/{PV}",
        data=iter([body[:100], body[100:]]),
        headers=JSON,
        timeout=30,
    )
    check_answer(response, "response")
    assert response.status_code == 200
    assert rule_ids(response) == ["cramp-labs-missing"]


def test_a_wrong_prefetch_value_is_explained_as_needing_a_resource(client):
    request = _with(_pv(), prefetch={**_pv()["prefetch"], "patient": "Patient/cramps-only"})
    response = client.call(PV, request)
    assert response.status_code == 400
    diagnostics = " ".join(i["diagnostics"] for i in response.json()["issue"])
    # A resource (object) is what a client should send; "must be null" alone misleads.
    assert "object" in diagnostics, diagnostics


def test_fhir_json_and_charset_content_types_are_accepted(client):
    for content_type in ("application/fhir+json", "application/json; charset=utf-8"):
        response = client.http.post(
            f"{client.base_url}/cds-services/{PV}",
            data=_bytes(_pv()),
            headers={"Content-Type": content_type},
            timeout=30,
        )
        check_answer(response, "response")
        assert response.status_code == 200, content_type


@pytest.mark.parametrize(
    "path", [f"/cds-services/{PV}", f"/cds-services/{PV}/feedback"], ids=["invoke", "feedback"]
)
def test_get_on_a_post_only_endpoint_is_405_with_an_operation_outcome(client, path):
    response = client.http.get(f"{client.base_url}{path}", timeout=10)
    check_answer(response, None)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_an_unknown_path_is_404_with_an_operation_outcome(client):
    response = client.http.get(f"{client.base_url}/no/such/path", timeout=10)
    check_answer(response, None)
    assert response.status_code == 404
