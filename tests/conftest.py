"""Fixtures: every test talks HTTP to real servers started here, on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from servers import (
    FaultServer,
    FhirServer,
    ServiceProcess,
    start_fault_server,
    start_fhir_server,
    start_service,
    stop,
)
from urllib3.util.retry import Retry

from cds_service import validation

EXAMPLES = Path(__file__).resolve().parent.parent / "fhir_examples" / "scenarios"
EXAMPLE_NOW = "2026-11-20T12:00:00Z"
DEADLINE_S = 2.0


def scenario_names() -> list[str]:
    return sorted(p.name.removesuffix(".request.json") for p in EXAMPLES.glob("*.request.json"))


def load_scenario(name: str) -> tuple[dict, dict]:
    request = json.loads((EXAMPLES / f"{name}.request.json").read_text())
    expected = json.loads((EXAMPLES / f"{name}.expected.json").read_text())
    return request, expected


class CdsClient:
    """A CDS client over HTTP that checks every answer against the project's schemas."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()
        # Like real clients, retry once when a pooled keep-alive connection turns out to be
        # closed (the server may close after answering 413 to a body it did not read).
        retry = Retry(total=1, connect=1, read=1, status=0, allowed_methods=None)
        self.http.mount("http://", HTTPAdapter(max_retries=retry))

    def discover(self) -> requests.Response:
        response = self.http.get(f"{self.base_url}/cds-services", timeout=10)
        if response.status_code == 200:
            assert validation.problems("discovery", response.json()) == []
        return response

    def call(self, service_id: str, body: object = None, **kwargs) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        response = self.http.post(
            f"{self.base_url}/cds-services/{service_id}", timeout=30, **kwargs
        )
        check_answer(response, "response")
        return response

    def feedback(self, service_id: str, body: object = None, **kwargs) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        response = self.http.post(
            f"{self.base_url}/cds-services/{service_id}/feedback", timeout=30, **kwargs
        )
        check_answer(response, None)
        return response


def check_answer(response: requests.Response, schema: str | None) -> None:
    """2xx bodies conform to their schema; every error is an OperationOutcome, never a 500."""
    assert response.status_code < 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"] and all(i["diagnostics"] for i in body["issue"])
    elif schema:
        assert validation.problems(schema, body) == [], body


def rule_ids(response: requests.Response) -> list[str]:
    return [card["source"]["topic"]["code"] for card in response.json()["cards"]]


def outcome_fields(response: requests.Response) -> list[str]:
    return [e for issue in response.json()["issue"] for e in issue.get("expression", [])]


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> ServiceProcess:
    workdir = tmp_path_factory.mktemp("service")
    running = start_service(
        workdir,
        {
            "CDS_FIXED_NOW": EXAMPLE_NOW,
            "CDS_FHIR_DEADLINE_S": str(DEADLINE_S),
            "CDS_VALIDATE_RESPONSES": "true",
            "CDS_MAX_BODY_BYTES": str(5 * 1024 * 1024),
        },
    )
    yield running
    stop(running.process)


@pytest.fixture(scope="session")
def client(service) -> CdsClient:
    return CdsClient(service.base_url)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory) -> FhirServer:
    server = start_fhir_server(tmp_path_factory.mktemp("fhir"))
    yield server
    stop(server.process)


@pytest.fixture(scope="session")
def fault_server() -> FaultServer:
    server = start_fault_server()
    yield server
    server.server.shutdown()
