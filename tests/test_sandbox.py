"""The service driven the way the public CDS Hooks sandbox drives it, with authentication on.

The sandbox (github.com/cds-hooks/sandbox, src/retrieve-data-helpers/jwt-generator.js) signs
every call with ES384, `iss` https://sandbox.cds-hooks.org, its key's `kid` and a `jku` naming
its published JWKS, with a 5-minute `exp`. Here a test key pair stands in for the sandbox's
key under the same `iss`, `kid` and `jku`, and the trust file holds the test public key inline
under that issuer, as the README's sandbox recipe holds the real one: nothing may be fetched
(this file needs no network). The FHIR server the sandbox names is not in the trust file: with
the whole prefetch sent, the answer is the cards and nothing is sent there.

Also here: which keys verify a token that names a `jku`, tolerant reading of what real clients
send (a single object for a FHIR array; the older bare-Coding `overrideReason`), and the reason
and field paths every 4xx leaves in the access log.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests
from conftest import EXAMPLE_NOW, load_scenario, outcome_fields, rule_ids
from cryptography.hazmat.primitives.asymmetric import ec
from servers import (
    FaultServer,
    JwksServer,
    ServiceProcess,
    free_port,
    start_fault_server,
    start_jwks_server,
    start_service,
    stop,
)

ISS_SANDBOX = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"  # the kid of the sandbox's own key
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_DEFAULT_FHIR = "https://launch.smarthealthit.org/v/r4/fhir"
ISS_INLINE = "https://inline-ehr.example.org"  # inline keys, and a jku it may also name
ISS_PUBLISHED = "https://published-ehr.example.org"  # a jwks_url, and another allowed jku

PATIENT_VIEW = "cramp-sciatica-patient-view"
ORDER_SELECT = "cramp-sciatica-order-select"
README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass
class Key:
    private: ec.EllipticCurvePrivateKey
    kid: str

    @classmethod
    def new(cls, kid: str) -> Key:
        return cls(ec.generate_private_key(ec.SECP384R1()), kid)

    def jwk(self) -> dict:
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "ES384", "use": "sig"}

    def token(self, iss: str, audience: str, jku: str | None) -> str:
        now = int(time.time())
        payload = {
            "iss": iss,
            "aud": audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        header = {"alg": "ES384", "typ": "JWT", "kid": self.kid}
        if jku:
            header["jku"] = jku
        return jwt.encode(payload, self.private, "ES384", headers=header)


@dataclass
class Sandbox:
    svc: ServiceProcess
    key: Key
    jwks: JwksServer
    fhir: FaultServer
    keys: dict[str, Key]
    urls: dict[str, str]

    def url(self, path: str) -> str:
        return self.svc.base_url + path

    def headers(self, path: str, key: Key | None = None, **token) -> dict:
        key = key or self.key
        iss = token.pop("iss", ISS_SANDBOX)
        jku = token.pop("jku", SANDBOX_JKU)
        return {"Authorization": f"Bearer {key.token(iss, self.url(path), jku)}"}

    def discover(self, **token) -> requests.Response:
        path = "/cds-services"
        return requests.get(self.url(path), headers=self.headers(path, **token), timeout=10)

    def call(self, service: str, body: object, **token) -> requests.Response:
        path = f"/cds-services/{service}"
        return requests.post(
            self.url(path), json=body, headers=self.headers(path, **token), timeout=30
        )

    def feedback(self, service: str, body: object) -> requests.Response:
        path = f"/cds-services/{service}/feedback"
        return requests.post(self.url(path), json=body, headers=self.headers(path), timeout=30)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    workdir = tmp_path_factory.mktemp("sandbox")
    key = Key.new(SANDBOX_KID)
    keys = {
        "inline": Key.new("inline-1"),
        "rotated": Key.new("inline-2"),  # published at the inline issuer's jku only
        "published": Key.new("published-1"),
        "other": Key.new("other-1"),  # published at the second allowed jku only
    }
    jwks = start_jwks_server()
    fhir = start_fault_server()
    urls = {
        "inline_jku": jwks.publish("/inline/jwks.json", {"keys": [keys["rotated"].jwk()]}),
        "published": jwks.publish("/published/jwks.json", {"keys": [keys["published"].jwk()]}),
        "other_jku": jwks.publish("/other/jwks.json", {"keys": [keys["other"].jwk()]}),
        "fhir": fhir.route("/sandbox-fhir", lambda handler: handler.send_error(500)),
    }
    trust = {
        "allow_http_loopback": True,
        "issuers": [
            # As in the README's recipe, with the test key in place of the sandbox's.
            {"iss": ISS_SANDBOX, "jwks": {"keys": [key.jwk()]}, "jku_allowlist": [SANDBOX_JKU]},
            {
                "iss": ISS_INLINE,
                "jwks": {"keys": [keys["inline"].jwk()]},
                "jku_allowlist": [urls["inline_jku"]],
            },
            {
                "iss": ISS_PUBLISHED,
                "jwks_url": urls["published"],
                "jku_allowlist": [urls["other_jku"]],
            },
        ],
    }
    trust_path = workdir / "trust.json"
    trust_path.write_text(json.dumps(trust))
    port = free_port()
    env = {
        "CDS_TRUST_CONFIG": str(trust_path),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_FIXED_NOW": EXAMPLE_NOW,
        "CDS_JWKS_MIN_REFRESH_S": "0.001",
    }
    svc = start_service(workdir, env, workers=1, auth=True, port=port)
    yield Sandbox(svc, key, jwks, fhir, keys, urls)
    stop(svc.process)
    jwks.fault.server.shutdown()
    fhir.server.shutdown()


def log_mark(svc: ServiceProcess) -> int:
    return svc.log_path.stat().st_size


def events_since(svc: ServiceProcess, mark: int, event: str = "request") -> list[dict]:
    with open(svc.log_path, "rb") as file:
        file.seek(mark)
        text = file.read().decode("utf-8", "replace")
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def scenario(name: str, **changes) -> tuple[dict, dict]:
    request, expected = load_scenario(name)
    request = json.loads(json.dumps(request))
    request["hookInstance"] = str(uuid.uuid4())
    request.update(changes)
    return request, expected


# ---------------------------------------------------------------- the sandbox's calls


def test_discovery_with_a_sandbox_token_needs_no_network(sandbox):
    mark = log_mark(sandbox.svc)
    response = sandbox.discover()
    assert response.status_code == 200, response.text
    assert PATIENT_VIEW in {s["id"] for s in response.json()["services"]}
    [record] = events_since(sandbox.svc, mark)
    assert record["issuer"] == ISS_SANDBOX
    assert "jwks_fetch_failed" not in sandbox.svc.log_text()  # the jku was never fetched


@pytest.mark.parametrize(
    "fhir_server",
    [
        pytest.param(SANDBOX_DEFAULT_FHIR, id="sandbox-default-fhir-server"),
        pytest.param("local", id="unlisted-local-fhir-server"),
    ],
)
def test_full_prefetch_with_an_unlisted_fhir_server_gets_the_critical_card(sandbox, fhir_server):
    server = sandbox.urls["fhir"] if fhir_server == "local" else fhir_server
    request, expected = scenario("cauda-equina-coded", fhirServer=server)
    seen = len(sandbox.fhir.seen)
    mark = log_mark(sandbox.svc)

    response = sandbox.call(PATIENT_VIEW, request)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    assert [c["indicator"] for c in response.json()["cards"]][0] == "critical"
    assert len(sandbox.fhir.seen) == seen  # nothing sent to the FHIR server
    [record] = events_since(sandbox.svc, mark)
    assert record["status"] == 200 and "fetched" not in record


def test_missing_required_data_on_an_unlisted_fhir_server_is_412_naming_the_policy(sandbox):
    request, _ = scenario("cauda-equina-coded", fhirServer=sandbox.urls["fhir"])
    del request["prefetch"]["conditions"]
    seen = len(sandbox.fhir.seen)
    mark = log_mark(sandbox.svc)

    response = sandbox.call(PATIENT_VIEW, request)

    assert response.status_code == 412, response.text
    assert outcome_fields(response) == ["fhirServer", "prefetch.conditions"]
    assert "FHIR-server policy" in response.json()["issue"][0]["diagnostics"]
    assert len(sandbox.fhir.seen) == seen
    [record] = events_since(sandbox.svc, mark)
    assert record["reason"] == "fhir-server-policy"
    assert record["expression"] == ["fhirServer", "prefetch.conditions"]


def test_feedback_in_both_override_reason_shapes_the_sandbox_has_sent(sandbox):
    request, _ = scenario("cauda-equina-coded", fhirServer=SANDBOX_DEFAULT_FHIR)
    card = sandbox.call(PATIENT_VIEW, request).json()["cards"][0]
    coding = card["overrideReasons"][0]
    now = "2026-11-20T12:05:00.000Z"
    shapes = {
        # CDS Hooks 2.0, as the sandbox sends it since May 2020 (system only when present)
        "current": {"reason": {"code": coding["code"], "system": coding["system"]}},
        # the older bare Coding (the sandbox until May 2020)
        "older": {"code": coding["code"], "system": coding["system"]},
    }
    mark = log_mark(sandbox.svc)
    for at, shape in enumerate(shapes.values()):
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": now.replace(":05:", f":0{5 + at}:"),
            "overrideReason": shape,
        }
        response = sandbox.feedback(PATIENT_VIEW, {"feedback": [item]})
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 1, "stored": 1}

    path = sandbox.svc.data_dir / "feedback.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT override_reason_system, override_reason_code FROM feedback "
            "WHERE card_uuid = ? ORDER BY outcome_timestamp",
            (card["uuid"],),
        ).fetchall()
    assert rows == [(coding["system"], coding["code"])] * 2
    [warning] = events_since(sandbox.svc, mark, "tolerated")
    assert warning["fields"] == ["feedback[0].overrideReason"]
    assert coding["code"] not in json.dumps(warning)


# ---------------------------------------------------------------- which keys verify a jku


def test_inline_keys_verify_a_token_naming_an_allowed_jku_without_fetching_it(sandbox):
    fetched = len(sandbox.jwks.fetches("/inline/"))
    response = sandbox.discover(
        key=sandbox.keys["inline"], iss=ISS_INLINE, jku=sandbox.urls["inline_jku"]
    )
    assert response.status_code == 200, response.text
    assert len(sandbox.jwks.fetches("/inline/")) == fetched


def test_an_allowed_jku_is_fetched_when_the_inline_keys_lack_the_kid(sandbox):
    key, jku = sandbox.keys["rotated"], sandbox.urls["inline_jku"]
    fetched = len(sandbox.jwks.fetches("/inline/"))
    assert sandbox.discover(key=key, iss=ISS_INLINE, jku=jku).status_code == 200
    assert len(sandbox.jwks.fetches("/inline/")) == fetched + 1
    # without a jku there is nothing to fetch: the inline keys decide
    assert sandbox.discover(key=key, iss=ISS_INLINE, jku=None).status_code == 401


def test_a_jku_off_the_allowlist_is_refused_and_never_fetched(sandbox):
    fetched = len(sandbox.jwks.fetches("/other/"))
    response = sandbox.discover(
        key=sandbox.keys["inline"], iss=ISS_INLINE, jku=sandbox.urls["other_jku"]
    )
    assert response.status_code == 401
    assert len(sandbox.jwks.fetches("/other/")) == fetched


def test_a_jwks_url_issuer_is_verified_with_its_own_keys_before_another_allowed_jku(sandbox):
    other_jku = sandbox.urls["other_jku"]
    fetched = len(sandbox.jwks.fetches("/other/"))
    own = sandbox.discover(key=sandbox.keys["published"], iss=ISS_PUBLISHED, jku=other_jku)
    assert own.status_code == 200, own.text
    assert len(sandbox.jwks.fetches("/other/")) == fetched
    other = sandbox.discover(key=sandbox.keys["other"], iss=ISS_PUBLISHED, jku=other_jku)
    assert other.status_code == 200, other.text
    assert len(sandbox.jwks.fetches("/other/")) == fetched + 1


def test_the_readme_sandbox_recipe_holds_the_sandboxs_public_key_and_allows_its_jku():
    """The recipe's trust file is valid, holds only public keys, and resolves the sandbox's
    kid for a token naming the sandbox's jku without any fetch."""
    from cds_service.auth import KeySource
    from cds_service.trust import load_trust

    text = README.read_text("utf-8")
    section = text[text.index("### The public CDS Hooks sandbox") :]
    block = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    document = json.loads(block)
    path = Path(f"/tmp/sandbox-recipe-{uuid.uuid4().hex}.json")
    try:
        path.write_text(json.dumps(document))
        trust = load_trust(path)
    finally:
        path.unlink()
    issuer = trust.issuers[ISS_SANDBOX]
    assert issuer.allows_jku(SANDBOX_JKU)
    assert all("d" not in key for key in issuer.jwks["keys"])  # no private key
    keys = KeySource(trust, ttl_s=300, min_refresh_s=300)
    keys._remote = lambda url, refresh: pytest.fail(f"fetched {url}")  # noqa: SLF001
    assert keys.key(issuer, SANDBOX_KID, SANDBOX_JKU).key_id == SANDBOX_KID


# ---------------------------------------------------------------- what real clients send


def test_quinine_ordered_with_a_single_object_reason_code_gets_the_quinine_card(sandbox):
    request, expected = scenario("v2-quinine-select-reason-cramps")
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["reasonCode"] = order["reasonCode"][0]  # as the sandbox's medication view sends it
    order["reasonCode"]["coding"] = order["reasonCode"]["coding"][0]
    mark = log_mark(sandbox.svc)

    response = sandbox.call(ORDER_SELECT, request)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    where = "context.draftOrders.entry[0].resource.reasonCode"
    [warning] = events_since(sandbox.svc, mark, "tolerated")
    assert warning["fields"] == [where, f"{where}[0].coding"]
    [record] = events_since(sandbox.svc, mark)
    assert record["tolerated"] == [where, f"{where}[0].coding"]
    logged = "\n".join(json.dumps(r) for r in [warning, record])
    assert "Leg cramps" not in logged and "55300003" not in logged  # paths, never values


def test_single_objects_in_prefetch_resources_are_read_too(sandbox):
    """Every Condition's codings sent as single objects: the critical card still shows."""
    request, expected = scenario("cauda-equina-coded")
    entries = request["prefetch"]["conditions"]["entry"]
    for entry in entries:
        condition = entry["resource"]
        for concept in ("code", "clinicalStatus", "verificationStatus"):
            condition[concept]["coding"] = condition[concept]["coding"][0]
    mark = log_mark(sandbox.svc)

    response = sandbox.call(PATIENT_VIEW, request)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    [warning] = events_since(sandbox.svc, mark, "tolerated")
    assert warning["count"] == 3 * len(entries)
    assert "prefetch.conditions.entry[1].resource.code.coding" in warning["fields"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(
            lambda r: r["context"]["draftOrders"].update(entry="quinine"),
            "context.draftOrders.entry",
            id="entry-a-string",
        ),
        pytest.param(
            lambda r: r["prefetch"].update(patient=["Patient"]), "prefetch.patient", id="list"
        ),
        pytest.param(lambda r: r.update(context=[r["context"]]), "context", id="context-list"),
    ],
)
def test_anything_else_malformed_is_still_400(sandbox, change, field):
    request, _ = scenario("v2-quinine-select-reason-cramps")
    change(request)
    response = sandbox.call(ORDER_SELECT, request)
    assert response.status_code == 400, response.text
    assert field in outcome_fields(response)


# ---------------------------------------------------------------- why a 4xx, in the access log


def test_every_4xx_leaves_its_reason_and_field_paths_in_the_access_log(sandbox):
    marker = f"Marker-{uuid.uuid4().hex}"
    svc = sandbox.svc
    base = svc.base_url
    invalid, _ = scenario("cauda-equina-coded")
    invalid["context"]["patientId"] = f"{marker} with spaces"
    calls = {
        "invalid": lambda: sandbox.call(PATIENT_VIEW, invalid),
        "unauthorized": lambda: requests.post(
            f"{base}/cds-services/{PATIENT_VIEW}",
            json=invalid,
            headers={"Authorization": f"Bearer {marker}"},
            timeout=10,
        ),
        "not-found": lambda: sandbox.call("no-such-service", invalid),
        "unsupported-media-type": lambda: requests.post(
            f"{base}/cds-services/{PATIENT_VIEW}",
            data=marker,
            headers={
                "Content-Type": "text/plain",
                **sandbox.headers(f"/cds-services/{PATIENT_VIEW}"),
            },
            timeout=10,
        ),
        "too-large": lambda: requests.post(
            f"{base}/cds-services/{PATIENT_VIEW}",
            data=b'{"x": "' + marker.encode() * 200_000 + b'"}',
            headers={
                "Content-Type": "application/json",
                **sandbox.headers(f"/cds-services/{PATIENT_VIEW}"),
            },
            timeout=30,
        ),
    }
    expected = {
        "invalid": (400, ["context.patientId"]),
        "unauthorized": (401, []),
        "not-found": (404, ["id"]),
        "unsupported-media-type": (415, ["Content-Type"]),
        "too-large": (413, ["body"]),
    }
    for reason, send in calls.items():
        mark = log_mark(svc)
        response = send()
        status, expression = expected[reason]
        assert response.status_code == status, (reason, response.text)
        [record] = events_since(svc, mark)
        assert (record["status"], record["reason"], record["expression"]) == (
            status,
            reason,
            expression,
        )
    assert marker not in svc.log_text()
