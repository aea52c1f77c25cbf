"""The CORS headers remembered per path for requests without Origin (app.py) are exactly those
flask-cors itself adds, on every kind of answer and on the first and later calls alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service import app as app_module
from cds_service.app import create_app
from cds_service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TYPICAL = (ROOT / "fhir_examples" / "scenarios" / "mixed-three-causes.request.json").read_bytes()
SERVICE = "/cds-services/cramp-sciatica-patient-view"

CALLS = [
    ("post", SERVICE, {"data": TYPICAL, "content_type": "application/json"}),
    ("post", SERVICE, {"data": b"{", "content_type": "application/json"}),
    ("post", SERVICE, {"data": b"{}", "content_type": "text/plain"}),
    ("post", "/cds-services/no-such-service", {"data": b"{}", "content_type": "application/json"}),
    ("post", SERVICE + "/feedback", {"data": b"[]", "content_type": "application/json"}),
    ("get", "/cds-services", {}),
    ("get", SERVICE, {}),
    ("get", "/health", {}),
    ("get", "/openapi.json", {}),
    ("get", "/no/such/path", {}),
    ("options", SERVICE, {}),
]
HEADERS = [
    {},
    {"Origin": "https://sandbox.cds-hooks.org"},
    {"Origin": "http://localhost:3000"},
    {"Origin": "https://evil.example"},
    {"Origin": ""},
    {"Access-Control-Request-Private-Network": "true"},
    {"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"},
]


def _answers(app) -> list:
    client = app.test_client()
    seen = []
    for _round in range(2):  # the second round answers from the memo
        for method, path, kwargs in CALLS:
            for headers in HEADERS:
                response = getattr(client, method)(path, headers=headers, **kwargs)
                body = response.get_data()
                if response.mimetype == "application/json":  # card uuids etc. are stable
                    body = json.loads(body)
                seen.append(
                    (method, path, headers, response.status_code, list(response.headers), body)
                )
    return seen


@pytest.mark.parametrize("origins", [None, ("*",), ("https://a.example", "https://b.example")])
def test_same_headers_as_flask_cors(tmp_path, monkeypatch, origins):
    def settings(name: str) -> Settings:
        extra = {} if origins is None else {"cors_origins": origins}
        return Settings(
            data_dir=tmp_path / name,
            auth_enabled=False,
            log_level="WARNING",
            fixed_now=None,
            **extra,
        )

    remembered = _answers(create_app(settings("memo")))
    monkeypatch.setattr(app_module, "_remember_cors_without_origin", lambda app: None)
    plain = _answers(create_app(settings("plain")))
    assert remembered == plain


def test_response_header_reads_as_werkzeug_headers_get():
    """The after-request hooks' header lookup without Werkzeug's KeyError: the same answer as
    `response.headers.get` for a header absent, present once, present twice, in any case."""
    from flask import Response

    from cds_service.api import response_header

    response = Response(b"{}", mimetype="application/json")
    response.headers.add("LOCATION", "/first")
    response.headers.add("location", "/second")
    response.headers.add("Vary", "Origin")
    for name in ("Location", "location", "Vary", "Access-Control-Allow-Origin", "Content-Type"):
        assert response_header(response, name) == response.headers.get(name)
        assert response_header(response, name.upper()) == response.headers.get(name)
