"""Fuzzing: schemathesis generates requests from the service's own /openapi.json.

Every operation the document lists gets positive cases (bodies valid by the document) and,
where it takes a body, negative ones (bodies that break it). Each answer must be no 5xx, a
documented status code and content type, and a body that conforms to the schema documented
for that status: the cards of a 200, the OperationOutcome of a 4xx. Negative bodies must be
refused with a 4xx. Half of the positive hook requests keep their generated `fhirServer` and
`prefetch`; the other half drop the server and carry an example patient's prefetch (renamed to
the generated `patientId`), so that they reach the rules and come back with cards.

The served document is loaded over HTTP from the running service (gunicorn); cases are
generated with a fixed seed (`derandomize`), so a run is reproducible.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from conftest import load_scenario, scenario_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.openapi import document
from cds_service.services import SERVICES

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 68  # Hypothesis may give a few fewer when it cannot find new inputs
MIN_CASES_PER_MODE = 63
MIN_TOTAL_CASES = 1000
# The service runs with --no-auth; a fixed header keeps negative generation on the body.
HEADERS = {"Authorization": "Bearer fuzz"}

OPERATIONS = [
    (method.upper(), path, "requestBody" in operation)
    for path, item in document()["paths"].items()
    for method, operation in item.items()
]
BODY_OPERATIONS = [(m, p) for m, p, has_body in OPERATIONS if has_body]
NO_BODY_OPERATIONS = [(m, p) for m, p, has_body in OPERATIONS if not has_body]
SCENARIOS = scenario_names()
RED_FLAGS = {"cauda-equina-red-flag", "motor-deficit-red-flag", "serious-pathology-red-flag"}
# Order hooks show red flags and order checks only (catalog v2), and generated requests carry no
# draft orders of the example: their prefetch comes from examples with a red flag.
RED_FLAG_SCENARIOS = [n for n in SCENARIOS if RED_FLAGS & set(load_scenario(n)[1]["rule_ids"])]
CASES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def api_schema(service):
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", timeout=10)
    yield schema
    print(f"\nschemathesis: {sum(CASES.values())} generated cases in total")
    for label, count in sorted(CASES.items()):
        print(f"  {count:4d}  {label}")


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def with_example_prefetch(body: dict, scenario: str) -> dict:
    """The generated request without a FHIR server, with the scenario's prefetch about the
    generated patient (and the generated prefetch keys beside it, which the service ignores)."""
    example = load_scenario(scenario)[0]
    old, new = example["context"]["patientId"], body["context"]["patientId"]
    text = json.dumps(example["prefetch"])
    text = text.replace(json.dumps(old), json.dumps(new))
    text = text.replace(json.dumps(f"Patient/{old}"), json.dumps(f"Patient/{new}"))
    extra = {k: v for k, v in (body.get("prefetch") or {}).items() if k not in example["prefetch"]}
    body = {k: v for k, v in body.items() if k not in {"fhirServer", "fhirAuthorization"}}
    body["prefetch"] = {**dict(list(extra.items())[:32]), **json.loads(text)}
    return body


def test_every_endpoint_is_in_the_document_and_the_plan_reaches_1000_cases():
    endpoints = {("GET", "/health"), ("GET", "/cds-services")}
    for service in SERVICES:
        endpoints |= {("POST", f"/cds-services/{service.id}")}
        endpoints |= {("POST", f"/cds-services/{service.id}/feedback")}
    assert endpoints <= {(method, path) for method, path, _body in OPERATIONS}
    assert len(BODY_OPERATIONS) * 2 * MIN_CASES_PER_MODE >= MIN_TOTAL_CASES


def test_the_served_document_is_the_one_built_from_the_validation_schemas(client):
    response = client.http.get(f"{client.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == document()


@pytest.mark.parametrize(
    ("method", "path"), NO_BODY_OPERATIONS, ids=[f"{m} {p}" for m, p in NO_BODY_OPERATIONS]
)
def test_operation_without_a_body_answers_as_documented(api_schema, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(GenerationMode.POSITIVE, headers=HEADERS))
    @fuzz_settings(10)
    def run(case):
        CASES[f"{method} {path} positive"] += 1
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 200

    run()
    assert CASES[f"{method} {path} positive"] >= 1


@pytest.mark.parametrize(
    ("method", "path"), BODY_OPERATIONS, ids=[f"{m} {p}" for m, p in BODY_OPERATIONS]
)
def test_valid_bodies_are_answered_as_documented(api_schema, method, path):
    operation = api_schema[path][method]
    label = f"{method} {path} positive"
    statuses: Counter[int | str] = Counter()
    is_hook = not path.endswith("/feedback")

    @given(
        case=operation.as_strategy(GenerationMode.POSITIVE, headers=HEADERS),
        deepen=st.sampled_from([True, False]) if is_hook else st.just(False),
        scenario=st.sampled_from(RED_FLAG_SCENARIOS if "order-s" in path else SCENARIOS),
    )
    @fuzz_settings(EXAMPLES_PER_MODE)
    def run(case, deepen, scenario):
        if deepen:
            case.body = with_example_prefetch(case.body, scenario)
        CASES[label] += 1
        response = case.call(timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if is_hook and response.status_code == 200 and response.json()["cards"]:
            statuses["with cards"] += 1

    run()
    assert CASES[label] >= MIN_CASES_PER_MODE
    # Valid bodies are answered, many with cards (the rest: 412 without a FHIR server to read
    # absent prefetch from, or 400 for a FHIR server the service may not send a token to);
    # every feedback is stored.
    if is_hook:
        assert statuses[200] >= 25 and statuses["with cards"] >= 15, statuses
    else:
        assert statuses[200] == CASES[label], statuses


@pytest.mark.parametrize(
    ("method", "path"), BODY_OPERATIONS, ids=[f"{m} {p}" for m, p in BODY_OPERATIONS]
)
def test_invalid_bodies_are_refused_with_a_4xx_operation_outcome(api_schema, method, path):
    operation = api_schema[path][method]
    label = f"{method} {path} negative"

    @given(case=operation.as_strategy(GenerationMode.NEGATIVE, headers=HEADERS))
    @fuzz_settings(EXAMPLES_PER_MODE)
    def run(case):
        CASES[label] += 1
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        assert 400 <= response.status_code < 500, response.text

    run()
    assert CASES[label] >= MIN_CASES_PER_MODE


def test_no_answer_failed_its_own_response_schema_check(service, api_schema):
    # The service runs with CDS_VALIDATE_RESPONSES: a card that breaks the response schema is
    # logged (by rule id) even when no check above looked at it.
    assert "response failed its schema" not in service.log_text()
    assert '"status": 500' not in service.log_text()
