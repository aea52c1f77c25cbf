"""Security over HTTP, with authentication ON: who may call, where tokens go, what is logged.

The service runs under gunicorn as an operator would run it, trusting six issuers from a
CDS_TRUST_CONFIG file: an EHR whose EC P-384 JWKS is served over HTTP on 127.0.0.1, an EHR with
an inline RSA JWKS, an EHR that lists tenants, the public CDS Hooks sandbox (its JWKS URL pointed
at a local server), an EHR whose keys rotate, and a key pair made by `cds-service keygen`. Key
pairs are generated here and tokens signed with PyJWT.

Every refusal must be a bare 401 and nothing else: no FHIR request, no feedback stored, no
detail to the caller; the reason goes to the log, never the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import sqlite3
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from conftest import EXAMPLE_NOW, load_scenario, outcome_fields, rule_ids
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from servers import (
    BIN,
    FaultServer,
    JwksServer,
    ServiceProcess,
    free_port,
    pid_serving,
    send_json,
    start_fault_server,
    start_jwks_server,
    start_service,
    stop,
    worker_pids,
)

SERVICE = "cramp-sciatica-patient-view"
OTHER_SERVICE = "cramp-sciatica-order-sign"
PATHS = {
    "discovery": "/cds-services",
    "service": f"/cds-services/{SERVICE}",
    "feedback": f"/cds-services/{SERVICE}/feedback",
}
MIN_REFRESH_S = 2.0
LEEWAY_S = 30
HASH_KEY = f"log-hash-key-{uuid.uuid4().hex}"

ISS_EC = "https://ehr.example.org"
ISS_RSA = "https://rsa-ehr.example.org"
ISS_TENANT = "https://tenant-ehr.example.org"
ISS_SANDBOX = "https://sandbox.cds-hooks.org"
ISS_ROTATING = "https://rotating-ehr.example.org"
ISS_CLI = "https://cli.example.org"
EHR_JWKS = "/ehr/jwks.json"
SANDBOX_JWKS = "/sandbox/.well-known/jwks.json"
ROTATING_JWKS = "/rotating/jwks.json"
EVIL_JWKS = "/evil/jwks.json"

BARE_401 = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "login", "diagnostics": "Unauthorized"}],
}
CRAMPS_ONLY_RULES = load_scenario("cramps-only")[1]["rule_ids"]
DROP = object()  # a claim or header left out of a token

# Every JWT, access token and patient id sent to a service here: none may reach its log.
SECRETS: list[str] = []
STARTED: list[ServiceProcess] = []


# ---------------------------------------------------------------- keys and tokens


@dataclass
class Key:
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    kid: str
    alg: str

    @classmethod
    def ec(cls, kid: str) -> Key:
        return cls(ec.generate_private_key(ec.SECP384R1()), kid, "ES384")

    @classmethod
    def rsa(cls, kid: str) -> Key:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid, "RS384")

    def jwk(self) -> dict:
        family = jwt.algorithms.ECAlgorithm if self.alg[0] == "E" else jwt.algorithms.RSAAlgorithm
        public = family.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def claims(iss: str, audience: object, **overrides: object) -> dict:
    now = int(time.time())
    payload = {"iss": iss, "aud": audience, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not DROP}


def signed(key: Key, iss: str, audience: object, *, header: dict | None = None, **overrides) -> str:
    headers = {"kid": key.kid, "typ": "JWT", **(header or {})}
    headers = {k: v for k, v in headers.items() if v is not DROP}
    token = jwt.encode(claims(iss, audience, **overrides), key.private, key.alg, headers=headers)
    SECRETS.append(token)
    return token


def b64(data: bytes | dict) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: dict, payload: dict, signature: bytes = b"") -> str:
    token = f"{b64(header)}.{b64(payload)}.{b64(signature)}"
    SECRETS.append(token)
    return token


def hs256_with_public_pem(key: Key, iss: str, aud: str) -> str:
    """The classic key confusion: HMAC keyed with the issuer's public key, which anyone has."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64(claims(iss, aud))}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    SECRETS.append(token)
    return token


def bearer(token: str) -> str:
    return f"Bearer {token}"


# ---------------------------------------------------------------- the world


@dataclass
class World:
    jwks: JwksServer
    fhir: FaultServer
    keys: dict[str, Key]
    urls: dict[str, str]
    cli_dir: Path
    cli_kid: str
    trust: Path
    trust_anonymous: Path


def empty_searchset(handler) -> None:
    send_json(handler, {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    workdir = tmp_path_factory.mktemp("security")
    keys = {
        "ec": Key.ec("ehr-ec-1"),
        "rsa": Key.rsa("rsa-1"),
        "tenant": Key.ec("tenant-1"),
        "sandbox": Key.ec(str(uuid.uuid4())),  # the sandbox names its key by a uuid
        "rotating": Key.ec("rotating-1"),
        "attacker": Key.ec("attacker-1"),
    }
    jwks = start_jwks_server()
    fhir = start_fault_server()
    urls = {
        "ehr_jwks": jwks.publish(EHR_JWKS, {"keys": [keys["ec"].jwk()]}),
        "sandbox_jwks": jwks.publish(SANDBOX_JWKS, {"keys": [keys["sandbox"].jwk()]}),
        "rotating_jwks": jwks.publish(ROTATING_JWKS, {"keys": [keys["rotating"].jwk()]}),
        "evil_jwks": jwks.publish(EVIL_JWKS, {"keys": [keys["attacker"].jwk()]}),
        "fhir_ehr": fhir.route("/ehr-fhir", empty_searchset),
        "fhir_rsa": fhir.route("/rsa-fhir", empty_searchset),
        "fhir_other": fhir.route("/other-fhir", empty_searchset),
    }
    cli_dir = workdir / "cli-keys"
    done = subprocess.run(
        [str(BIN / "cds-service"), "keygen", "--dir", str(cli_dir), "--kid", "cli-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    issuers = [
        {"iss": ISS_EC, "jwks_url": urls["ehr_jwks"], "fhir_servers": [urls["fhir_ehr"]]},
        {
            "iss": ISS_RSA,
            "jwks": {"keys": [keys["rsa"].jwk()]},
            "fhir_servers": [urls["fhir_rsa"]],
        },
        {
            "iss": ISS_TENANT,
            "jwks": {"keys": [keys["tenant"].jwk()]},
            "tenants": ["north", "south"],
        },
        {"iss": ISS_SANDBOX, "jwks_url": urls["sandbox_jwks"]},
        {"iss": ISS_ROTATING, "jwks_url": urls["rotating_jwks"]},
        {"iss": ISS_CLI, "jwks": json.loads((cli_dir / "jwks.json").read_text())},
    ]
    trust = workdir / "trust.json"
    trust.write_text(json.dumps({"allow_http_loopback": True, "issuers": issuers}))
    trust_anonymous = workdir / "trust-anonymous.json"
    trust_anonymous.write_text(
        json.dumps({"allow_http_loopback": True, "anonymous_discovery": True, "issuers": issuers})
    )
    yield World(jwks, fhir, keys, urls, cli_dir, "cli-1", trust, trust_anonymous)
    jwks.fault.server.shutdown()
    fhir.server.shutdown()


def start_auth_service(workdir: Path, trust: Path, workers: int) -> ServiceProcess:
    port = free_port()
    env = {
        "CDS_TRUST_CONFIG": str(trust),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_JWKS_MIN_REFRESH_S": str(MIN_REFRESH_S),
        "CDS_JWT_LEEWAY_S": str(LEEWAY_S),
        "CDS_LOG_HASH_KEY": HASH_KEY,
        "CDS_FIXED_NOW": EXAMPLE_NOW,
        "CDS_FHIR_DEADLINE_S": "3",
    }
    service = start_service(workdir, env, workers=workers, auth=True, port=port)
    STARTED.append(service)
    return service


@pytest.fixture(scope="module")
def svc(world, tmp_path_factory) -> ServiceProcess:
    """One worker, so that JWKS fetches and audit rows are counted exactly."""
    service = start_auth_service(tmp_path_factory.mktemp("auth-service"), world.trust, 1)
    yield service
    stop(service.process)


@pytest.fixture(scope="module")
def svc2(world, tmp_path_factory) -> ServiceProcess:
    """Two worker processes, and anonymous discovery allowed."""
    workdir = tmp_path_factory.mktemp("auth-service-2")
    service = start_auth_service(workdir, world.trust_anonymous, 2)
    yield service
    stop(service.process)


# ---------------------------------------------------------------- calling the service


def aud(svc: ServiceProcess, endpoint: str) -> str:
    return svc.base_url + PATHS[endpoint]


def hook_request(
    fhir_server: str | None = None, missing: str = "medications"
) -> tuple[dict, str, str]:
    """A patient-view request for a fresh patient id; with `fhir_server`, the `missing`
    prefetch key is left for the service to read there with a fresh access token.
    Returns (request, patient id, access token)."""
    request, _ = load_scenario("cramps-only")
    patient = f"sec-pt-{uuid.uuid4().hex}"
    request = json.loads(json.dumps(request).replace("cramps-only", patient))
    request["hookInstance"] = str(uuid.uuid4())
    access_token = f"at-{uuid.uuid4().hex}"
    if fhir_server:
        del request["prefetch"][missing]
        request["fhirServer"] = fhir_server
        request["fhirAuthorization"] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/MedicationRequest.read",
            "subject": "crampcds",
        }
    SECRETS.extend([patient, access_token])
    return request, patient, access_token


def feedback_body(card: str) -> dict:
    return {
        "feedback": [
            {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00Z"}
        ]
    }


def call(
    svc: ServiceProcess,
    endpoint: str,
    authorization: str | None,
    body: dict | None = None,
    headers: dict | None = None,
) -> requests.Response:
    headers = dict(headers or {})
    if authorization is not None:
        headers["Authorization"] = authorization
    url = svc.base_url + PATHS[endpoint]
    if endpoint == "discovery":
        return requests.get(url, headers=headers, timeout=10)
    return requests.post(url, json=body, headers=headers, timeout=30)


def body_for(world: World, endpoint: str) -> tuple[dict | None, str]:
    """A body for `endpoint` that would make the service act (read the FHIR server, store
    feedback) if it were accepted; and the card uuid a feedback body names."""
    card = str(uuid.uuid4())
    if endpoint == "service":
        return hook_request(world.urls["fhir_ehr"])[0], card
    if endpoint == "feedback":
        return feedback_body(card), card
    return None, card


def log_mark(svc: ServiceProcess) -> int:
    return svc.log_path.stat().st_size


def records_since(svc: ServiceProcess, mark: int) -> list[dict]:
    """The access-log records (JSON lines) the service wrote after `mark`."""
    with open(svc.log_path, "rb") as file:
        file.seek(mark)
        text = file.read().decode("utf-8", "replace")
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "request":
                    records.append(record)
    return records


def feedback_rows(svc: ServiceProcess, card: str) -> list[tuple]:
    path = svc.data_dir / "feedback.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT * FROM feedback WHERE card_uuid = ?", (card,)).fetchall()


def assert_bare_401(response: requests.Response) -> None:
    """Refused, and told nothing about why."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == BARE_401
    assert response.headers.get("WWW-Authenticate") == "Bearer"


def patient_hash(patient: str, issuer: str, tenant: str = "") -> str:
    """The keyed hash the service logs for a patient of a verified client: the patient id means
    something only within its issuer (and tenant), so they are hashed with it."""
    text = "\x00".join(("client", issuer, tenant, patient))
    return hmac.new(HASH_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()[:20]


# ---------------------------------------------------------------- refusals: bare 401, nothing else


def _ec(world: World, audience: object, **kw) -> str:
    return bearer(signed(world.keys["ec"], ISS_EC, audience, **kw))


def _tenant(world: World, audience: object, **kw) -> str:
    return bearer(signed(world.keys["tenant"], ISS_TENANT, audience, **kw))


def _wrong_signature(world: World, aud: str, name: str, iss: str) -> str:
    """Signed by a key of the attacker's, under the kid of the issuer's real key."""
    real = world.keys[name]
    other = Key.ec(real.kid) if real.alg == "ES384" else Key.rsa(real.kid)
    return bearer(signed(other, iss, aud))


def _other_endpoint(svc_aud: str) -> str:
    path = urlsplit(svc_aud).path
    base = svc_aud[: -len(path)]
    if path == PATHS["service"]:
        return f"{base}/cds-services/{OTHER_SERVICE}"  # another service
    if path == PATHS["feedback"]:
        return base + PATHS["service"]  # the service, not its feedback endpoint
    return base + PATHS["service"]


def _other_host(svc_aud: str) -> str:
    return "https://cds.evil.example.org" + urlsplit(svc_aud).path


# Claims of the wrong type or missing are refused by auth.py's type check, before PyJWT's.
REFUSALS = [
    pytest.param(lambda w, a: None, r"^no Authorization header$", id="no-token"),
    pytest.param(lambda w, a: "Basic dXNlcjpwYXNz", r"not a Bearer token", id="not-bearer"),
    pytest.param(lambda w, a: "Bearer not-a-jwt", r"^malformed token$", id="malformed"),
    pytest.param(lambda w, a: "Bearer a.b.c", r"^malformed token$", id="malformed-3-parts"),
    pytest.param(
        lambda w, a: bearer(
            forged({"alg": ["ES384"], "typ": "JWT", "kid": "ehr-ec-1"}, claims(ISS_EC, a), b"x")
        ),
        r"algorithm not allowed",
        id="malformed-alg-not-a-string",
    ),
    pytest.param(
        lambda w, a: bearer(
            forged({"alg": "ES384", "typ": "JWT", "kid": "ehr-ec-1"}, claims([ISS_EC], a), b"x")
        ),
        r"claim iss is not a string",
        id="malformed-iss-not-a-string",
    ),
    pytest.param(
        lambda w, a: bearer(
            forged({"alg": "none", "typ": "JWT", "kid": "ehr-ec-1"}, claims(ISS_EC, a))
        ),
        r"algorithm not allowed: none",
        id="alg-none",
    ),
    pytest.param(
        lambda w, a: bearer(hs256_with_public_pem(w.keys["rsa"], ISS_RSA, a)),
        r"algorithm not allowed: HS256",
        id="hs256-keyed-with-rsa-public-pem",
    ),
    pytest.param(
        lambda w, a: bearer(hs256_with_public_pem(w.keys["ec"], ISS_EC, a)),
        r"algorithm not allowed: HS256",
        id="hs256-keyed-with-ec-public-pem",
    ),
    pytest.param(
        lambda w, a: _wrong_signature(w, a, "ec", ISS_EC),
        r"InvalidSignatureError",
        id="wrong-signature-es384-jwks-url",
    ),
    pytest.param(
        lambda w, a: _wrong_signature(w, a, "rsa", ISS_RSA),
        r"InvalidSignatureError",
        id="wrong-signature-rs384-inline",
    ),
    pytest.param(
        lambda w, a: bearer(signed(Key.rsa("rsa-unknown"), ISS_RSA, a)),
        r"unknown kid",
        id="unknown-kid-inline-jwks",
    ),
    pytest.param(lambda w, a: _ec(w, a, header={"kid": DROP}), r"^no kid$", id="no-kid"),
    pytest.param(
        lambda w, a: _ec(w, a, header={"typ": "at+jwt"}), r"^typ is not JWT$", id="typ-not-jwt"
    ),
    pytest.param(
        lambda w, a: bearer(
            signed(
                w.keys["attacker"],
                "https://evil.example.org",
                a,
                header={"jku": w.urls["evil_jwks"]},
            )
        ),
        r"untrusted issuer https://evil\.example\.org",
        id="unknown-iss",
    ),
    pytest.param(
        lambda w, a: bearer(
            signed(w.keys["attacker"], ISS_EC, a, header={"jku": w.urls["evil_jwks"]})
        ),
        r"jku not on the allowlist",
        id="jku-not-on-allowlist",
    ),
    pytest.param(
        lambda w, a: _ec(w, _other_endpoint(a)), r"InvalidAudienceError", id="aud-other-endpoint"
    ),
    pytest.param(lambda w, a: _ec(w, _other_host(a)), r"InvalidAudienceError", id="aud-other-host"),
    pytest.param(
        lambda w, a: _ec(w, [_other_host(a), _other_endpoint(a)]),
        r"InvalidAudienceError",
        id="aud-array-without-this-endpoint",
    ),
    pytest.param(lambda w, a: _ec(w, a, aud=DROP), r"claim aud is not", id="no-aud"),
    pytest.param(
        lambda w, a: _ec(w, a, iat=int(time.time()) - 400, exp=int(time.time()) - LEEWAY_S - 60),
        r"ExpiredSignatureError",
        id="expired",
    ),
    pytest.param(lambda w, a: _ec(w, a, exp=DROP), r"claim exp is not", id="no-exp"),
    pytest.param(
        lambda w, a: _ec(w, a, iat=int(time.time()) + LEEWAY_S + 120, exp=int(time.time()) + 600),
        # PyJWT checks iat too (ImmatureSignatureError); auth.py checks it again after decoding.
        r"iat in the future|ImmatureSignatureError",
        id="iat-in-the-future",
    ),
    pytest.param(lambda w, a: _ec(w, a, jti=DROP), r"claim jti is not", id="no-jti"),
    pytest.param(
        lambda w, a: _ec(w, a, exp=int(time.time()) + 86_400),
        r"lifetime over 3600 s",
        id="good-for-a-day",
    ),
    pytest.param(
        lambda w, a: _tenant(w, a, tenant="west"), r"tenant not allowed", id="wrong-tenant"
    ),
    pytest.param(lambda w, a: _tenant(w, a), r"tenant not allowed", id="missing-tenant"),
    pytest.param(
        lambda w, a: _tenant(w, a, tenant=["north"]),
        r"claim tenant is not a string",
        id="tenant-not-a-string",
    ),
]


@pytest.mark.parametrize(("make", "reason"), REFUSALS)
def test_refused_with_a_bare_401_and_nothing_else_happens(svc, world, make, reason):
    fhir_seen = len(world.fhir.seen)
    for endpoint in PATHS:
        body, card = body_for(world, endpoint)
        mark = log_mark(svc)

        response = call(svc, endpoint, make(world, aud(svc, endpoint)), body)

        assert_bare_401(response)
        [record] = records_since(svc, mark)
        assert record["status"] == 401 and record["path"] == PATHS[endpoint]
        assert re.search(reason, record["auth_failure"]), record
        assert "issuer" not in record
        assert feedback_rows(svc, card) == []
    assert len(world.fhir.seen) == fhir_seen  # no FHIR request, with or without the token
    assert world.jwks.fetches(EVIL_JWKS) == []  # a jku off the allowlist is never fetched


def test_an_untrusted_issuer_makes_the_service_fetch_nothing(svc, world):
    fetched = len(world.jwks.fetched)
    token = signed(
        world.keys["attacker"],
        "https://evil.example.org",
        aud(svc, "discovery"),
        header={"jku": world.urls["ehr_jwks"]},
    )
    assert_bare_401(call(svc, "discovery", bearer(token)))
    assert len(world.jwks.fetched) == fetched


def test_unknown_kid_refetches_the_jwks_once_and_a_burst_cannot_make_it_fetch_more(svc, world):
    target = aud(svc, "discovery")
    assert call(svc, "discovery", _ec(world, target)).status_code == 200  # the set is cached
    last = max(world.jwks.fetches(EHR_JWKS))
    time.sleep(max(0.0, last + MIN_REFRESH_S + 0.3 - time.monotonic()))  # a refresh is due
    fetched = len(world.jwks.fetches(EHR_JWKS))
    mark = log_mark(svc)

    assert_bare_401(call(svc, "discovery", bearer(signed(Key.ec("ehr-ec-new"), ISS_EC, target))))

    [record] = records_since(svc, mark)
    assert re.search(r"unknown kid .* after JWKS refresh", record["auth_failure"])
    assert len(world.jwks.fetches(EHR_JWKS)) == fetched + 1  # asked again, exactly once

    # A burst of made-up kids, also naming the JWKS URL as a jku spelt in other ways, within
    # the minimum refresh interval: no more fetches.
    url = world.urls["ehr_jwks"]
    spellings = [DROP, url, url + "/", url.replace("http://", "HTTP://"), url + "?x=1"]
    tokens = [
        signed(Key.ec(f"made-up-{i}"), ISS_EC, target, header={"jku": spellings[i % 5]})
        for i in range(20)
    ]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda t: call(svc, "discovery", bearer(t)), tokens))
    assert time.monotonic() - started < MIN_REFRESH_S, "the burst outlasted the interval"
    for response in responses:
        assert_bare_401(response)
    assert len(world.jwks.fetches(EHR_JWKS)) == fetched + 1


def test_replayed_jti_is_refused_and_nothing_else_happens(svc, world):
    fhir = world.urls["fhir_ehr"]
    token = signed(world.keys["ec"], ISS_EC, aud(svc, "service"))
    first, _, access_token = hook_request(fhir)
    seen = len(world.fhir.requests_to("/ehr-fhir"))

    response = call(svc, "service", bearer(token), first)

    assert response.status_code == 200, response.text  # the first use is good
    assert len(world.fhir.requests_to("/ehr-fhir")) == seen + 1
    again, _, _ = hook_request(fhir)
    mark = log_mark(svc)
    assert_bare_401(call(svc, "service", bearer(token), again))
    [record] = records_since(svc, mark)
    assert record["auth_failure"] == f"replayed jti from {ISS_EC}"
    # the same jti in a freshly signed token is a replay too
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    resigned = signed(world.keys["ec"], ISS_EC, aud(svc, "service"), jti=jti)
    assert_bare_401(call(svc, "service", bearer(resigned), hook_request(fhir)[0]))
    assert len(world.fhir.requests_to("/ehr-fhir")) == seen + 1  # no FHIR request for replays

    # feedback: stored on first use, not on replay
    token = signed(world.keys["ec"], ISS_EC, aud(svc, "feedback"))
    card, replayed_card = str(uuid.uuid4()), str(uuid.uuid4())
    assert call(svc, "feedback", bearer(token), feedback_body(card)).status_code == 200
    assert len(feedback_rows(svc, card)) == 1
    assert_bare_401(call(svc, "feedback", bearer(token), feedback_body(replayed_card)))
    assert feedback_rows(svc, replayed_card) == []


def _send_on_new_connection(svc: ServiceProcess, token: str, body: dict):
    """POST on a connection of its own, left open so the serving worker can be found."""
    port = urlsplit(svc.base_url).port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.connect()
    client_port = connection.sock.getsockname()[1]
    connection.request(
        "POST",
        PATHS["service"],
        body=json.dumps(body),
        headers={"Authorization": bearer(token), "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    return connection, response.status, client_port


def test_a_replay_sent_to_another_worker_process_is_refused(svc2, world):
    deadline = time.monotonic() + 20
    while len(workers := worker_pids(svc2.process)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2
    port = urlsplit(svc2.base_url).port
    token = signed(world.keys["ec"], ISS_EC, aud(svc2, "service"))

    def send() -> tuple[int, int | None]:
        """The status, and the worker that answered (found while the connection is open)."""
        connection, status, client_port = _send_on_new_connection(svc2, token, hook_request()[0])
        try:
            return status, pid_serving(client_port, port, workers)
        finally:
            connection.close()

    status, first_worker = send()
    assert status == 200  # the first use is good
    assert first_worker in workers
    other = None
    while other is None and time.monotonic() < deadline:  # the second may still be loading
        status, worker = send()
        assert status == 401  # a replay, whichever worker has it
        if worker is not None and worker != first_worker:
            other = worker
        time.sleep(0.01)
    assert other in workers, "no replay reached the second worker"


def test_concurrent_replays_over_two_workers_succeed_exactly_once(svc2, world):
    token = signed(world.keys["ec"], ISS_EC, aud(svc2, "service"))
    bodies = [hook_request()[0] for _ in range(16)]
    mark = log_mark(svc2)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(lambda b: call(svc2, "service", bearer(token), b).status_code, bodies)
        )
    assert sorted(statuses) == [200] + [401] * 15
    failures = [r["auth_failure"] for r in records_since(svc2, mark) if r["status"] == 401]
    assert failures == [f"replayed jti from {ISS_EC}"] * 15


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("name", "iss"),
    [
        pytest.param("ec", ISS_EC, id="ES384-jwks-url"),
        pytest.param("rsa", ISS_RSA, id="RS384-inline"),
    ],
)
def test_valid_tokens_are_accepted_on_discovery_a_service_and_feedback(svc, world, name, iss):
    key = world.keys[name]
    mark = log_mark(svc)

    discovery = call(svc, "discovery", bearer(signed(key, iss, aud(svc, "discovery"))))
    request, _, _ = hook_request()
    invoked = call(svc, "service", bearer(signed(key, iss, aud(svc, "service"))), request)
    card = invoked.json()["cards"][0]["uuid"]
    feedback = call(
        svc, "feedback", bearer(signed(key, iss, aud(svc, "feedback"))), feedback_body(card)
    )

    assert discovery.status_code == 200
    assert SERVICE in {s["id"] for s in discovery.json()["services"]}
    assert invoked.status_code == 200 and rule_ids(invoked) == ["cramp-labs-missing"]
    assert feedback.status_code == 200 and feedback.json() == {"received": 1, "stored": 1}
    assert len(feedback_rows(svc, card.removeprefix("urn:uuid:"))) == 1
    records = records_since(svc, mark)
    assert [(r["path"], r["status"], r["issuer"]) for r in records] == [
        (PATHS[e], 200, iss) for e in ("discovery", "service", "feedback")
    ]


def test_aud_may_be_an_array_that_names_the_endpoint(svc, world):
    target = aud(svc, "discovery")
    assert call(svc, "discovery", _ec(world, [_other_host(target), target])).status_code == 200


@pytest.mark.parametrize(
    "times",
    [
        pytest.param({"iat": -300, "exp": -(LEEWAY_S // 2)}, id="expired-within-leeway"),
        pytest.param({"iat": LEEWAY_S // 2, "exp": 300}, id="iat-ahead-within-leeway"),
    ],
)
def test_small_clock_skew_is_tolerated(svc, world, times):
    now = int(time.time())
    token = signed(
        world.keys["ec"], ISS_EC, aud(svc, "discovery"), **{k: now + v for k, v in times.items()}
    )
    assert call(svc, "discovery", bearer(token)).status_code == 200


def test_a_listed_tenant_is_accepted_and_logged(svc, world):
    mark = log_mark(svc)
    response = call(svc, "discovery", _tenant(world, aud(svc, "discovery"), tenant="south"))
    assert response.status_code == 200
    [record] = records_since(svc, mark)
    assert record["issuer"] == ISS_TENANT and record["tenant"] == "south"


def test_a_token_signed_like_the_public_cds_hooks_sandbox_is_accepted(svc, world):
    """ES384, kid, jku = the sandbox's JWKS URL (here served locally), 5-minute exp."""
    key, jku = world.keys["sandbox"], world.urls["sandbox_jwks"]

    def sandbox_token(audience: str, jwks_url: str = jku) -> str:
        now = int(time.time())
        payload = {
            "iss": ISS_SANDBOX,
            "aud": audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        header = {"alg": "ES384", "typ": "JWT", "kid": key.kid, "jku": jwks_url}
        token = jwt.encode(payload, key.private, "ES384", headers=header)
        SECRETS.append(token)
        return token

    mark = log_mark(svc)
    discovery = call(svc, "discovery", bearer(sandbox_token(aud(svc, "discovery"))))
    invoked = call(svc, "service", bearer(sandbox_token(aud(svc, "service"))), hook_request()[0])
    assert discovery.status_code == 200 and invoked.status_code == 200, invoked.text
    assert [r["issuer"] for r in records_since(svc, mark)] == [ISS_SANDBOX, ISS_SANDBOX]
    assert world.jwks.fetches(SANDBOX_JWKS)
    # a jku other than the configured JWKS URL (the real sandbox's) is not followed
    real = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    assert_bare_401(call(svc, "discovery", bearer(sandbox_token(aud(svc, "discovery"), real))))


def test_key_rotation_without_restart(svc, world):
    target = aud(svc, "discovery")
    pid = svc.process.pid
    old = world.keys["rotating"]
    assert call(svc, "discovery", bearer(signed(old, ISS_ROTATING, target))).status_code == 200
    new = Key.ec("rotating-2")
    world.jwks.documents[ROTATING_JWKS] = {"keys": [new.jwk()]}
    time.sleep(
        max(0.0, max(world.jwks.fetches(ROTATING_JWKS)) + MIN_REFRESH_S + 0.3 - time.monotonic())
    )
    fetched = len(world.jwks.fetches(ROTATING_JWKS))

    response = call(svc, "discovery", bearer(signed(new, ISS_ROTATING, target)))

    assert response.status_code == 200
    assert len(world.jwks.fetches(ROTATING_JWKS)) == fetched + 1
    assert svc.process.poll() is None and svc.process.pid == pid
    # the retired key is gone with its set
    assert_bare_401(call(svc, "discovery", bearer(signed(old, ISS_ROTATING, target))))


def test_cli_keygen_and_sign_token_make_tokens_the_service_accepts(svc, world):
    key_path = world.cli_dir / "private-key.pem"
    assert key_path.stat().st_mode & 0o777 == 0o600
    for endpoint in ("discovery", "service"):
        done = subprocess.run(
            [
                str(BIN / "cds-service"),
                "sign-token",
                "--key",
                str(key_path),
                "--kid",
                world.cli_kid,
                "--iss",
                ISS_CLI,
                "--aud",
                aud(svc, endpoint),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        SECRETS.append(token)
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
        assert (header["alg"], header["kid"], header["typ"]) == ("ES384", world.cli_kid, "JWT")
        assert payload["exp"] - payload["iat"] == 300

        body = hook_request()[0] if endpoint == "service" else None
        response = call(svc, endpoint, bearer(token), body)

        assert response.status_code == 200, response.text


# ---------------------------------------------------------------- what needs no token


def test_anonymous_discovery_only_when_the_operator_allows_it(svc, svc2):
    assert_bare_401(call(svc, "discovery", None))
    open_discovery = call(svc2, "discovery", None)
    assert open_discovery.status_code == 200
    assert SERVICE in {s["id"] for s in open_discovery.json()["services"]}
    # only discovery: the services still need a token
    assert_bare_401(call(svc2, "service", None, hook_request()[0]))
    assert_bare_401(call(svc2, "feedback", None, feedback_body(str(uuid.uuid4()))))


def test_health_needs_no_token(svc):
    response = requests.get(f"{svc.base_url}/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_cors_preflight_allows_authorization_and_needs_no_token(svc, endpoint):
    origin = "https://sandbox.cds-hooks.org"
    response = requests.options(
        svc.base_url + PATHS[endpoint],
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET" if endpoint == "discovery" else "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert response.status_code in (200, 204)
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert response.headers["Access-Control-Allow-Origin"] in ("*", origin)


@pytest.mark.parametrize("path", ["/console", "/openapi.json", "/health"])
def test_cors_is_not_offered_outside_the_cds_hooks_endpoints(svc, path):
    response = requests.get(
        svc.base_url + path, headers={"Origin": "https://evil.example.org"}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cross_origin_answers_are_readable_by_the_browser(svc, world):
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    good = call(svc, "discovery", _ec(world, aud(svc, "discovery")), headers=origin)
    refused = call(svc, "discovery", None, headers=origin)
    assert good.status_code == 200 and good.headers["Access-Control-Allow-Origin"]
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"]


# ---------------------------------------------------------------- where the access token may go


# A URL with user information (`http://ehr.example.org@127.0.0.1/...`) is no longer a policy
# question but a malformed fhirServer: 400 (tests/test_hostile_input.py).
DISALLOWED_FHIR = [
    pytest.param(lambda w: w.urls["fhir_ehr"].replace("127.0.0.1", "localhost"), id="alias-host"),
    pytest.param(lambda w: w.urls["fhir_rsa"], id="another-issuers-server"),
    pytest.param(lambda w: w.urls["fhir_other"], id="same-host-other-base"),
    pytest.param(lambda w: "https://fhir.evil.example.org/r4", id="another-host-https"),
    pytest.param(lambda w: "http://192.0.2.10/fhir", id="http-not-loopback"),
]


@pytest.mark.parametrize("server", DISALLOWED_FHIR)
def test_a_disallowed_fhir_server_gets_412_naming_the_policy_and_nothing_is_sent(
    svc, world, server
):
    """A required key would have to be read there: 412 (not 400), before any request."""
    request, _, access_token = hook_request(server(world), missing="conditions")
    seen = len(world.fhir.seen)

    response = call(svc, "service", _ec(world, aud(svc, "service")), request)

    assert response.status_code == 412, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert outcome_fields(response) == ["fhirServer", "prefetch.conditions"]
    assert {i["code"] for i in response.json()["issue"]} == {"forbidden"}
    assert "FHIR-server policy" in response.json()["issue"][0]["diagnostics"]
    assert access_token not in response.text
    assert len(world.fhir.seen) == seen


@pytest.mark.parametrize("server", DISALLOWED_FHIR)
def test_a_disallowed_fhir_server_with_only_optional_data_missing_gets_cards_naming_the_gap(
    svc, world, server
):
    request, _, access_token = hook_request(server(world), missing="medications")
    seen = len(world.fhir.seen)

    response = call(svc, "service", _ec(world, aud(svc, "service")), request)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == CRAMPS_ONLY_RULES
    assert "medications: not read, the FHIR server named is not allowed" in response.text
    assert access_token not in response.text
    assert len(world.fhir.seen) == seen


@pytest.mark.parametrize("server", DISALLOWED_FHIR)
def test_a_complete_prefetch_is_answered_whatever_fhir_server_says(svc, world, server):
    request, _, _ = hook_request()
    request["fhirServer"] = server(world)
    seen = len(world.fhir.seen)

    response = call(svc, "service", _ec(world, aud(svc, "service")), request)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == CRAMPS_ONLY_RULES
    assert "not allowed" not in response.text
    assert len(world.fhir.seen) == seen


@pytest.mark.parametrize(
    ("name", "iss", "route"),
    [
        pytest.param("ec", ISS_EC, "fhir_ehr", id="ES384-issuer"),
        pytest.param("rsa", ISS_RSA, "fhir_rsa", id="RS384-issuer"),
    ],
)
def test_an_allowed_fhir_server_receives_the_access_token(svc, world, name, iss, route):
    server = world.urls[route]
    prefix = urlsplit(server).path
    request, patient, access_token = hook_request(server)
    seen = len(world.fhir.requests_to(prefix))

    response = call(
        svc, "service", bearer(signed(world.keys[name], iss, aud(svc, "service"))), request
    )

    assert response.status_code == 200, response.text
    [(path, headers)] = world.fhir.requests_to(prefix)[seen:]
    assert path == f"{prefix}/MedicationRequest?patient={patient}"
    assert headers["Authorization"] == f"Bearer {access_token}"


@pytest.mark.parametrize(
    "server", ["https://fhir.example.org/r4", "http://192.0.2.10/fhir"], ids=["https", "http"]
)
def test_without_auth_the_same_policy_holds_for_a_non_loopback_fhir_server(client, server):
    request, _, _ = hook_request(server, missing="observations")
    response = client.call(SERVICE, request)
    assert response.status_code == 412
    assert outcome_fields(response) == ["fhirServer", "prefetch.observations"]

    complete, _, _ = hook_request()
    complete["fhirServer"] = server
    answered = client.call(SERVICE, complete)
    assert answered.status_code == 200 and rule_ids(answered) == CRAMPS_ONLY_RULES


# ---------------------------------------------------------------- start-up


@pytest.mark.parametrize("unset", ["CDS_TRUST_CONFIG", "CDS_PUBLIC_BASE_URL"])
def test_with_auth_on_the_service_refuses_to_start_without_its_configuration(
    world, tmp_path, unset
):
    env = {
        **os.environ,
        "CDS_DATA_DIR": str(tmp_path / "data"),
        "CDS_TRUST_CONFIG": str(world.trust),
        "CDS_PUBLIC_BASE_URL": "http://127.0.0.1:8080",
    }
    del env[unset]
    done = subprocess.run(
        [str(BIN / "cds-service"), "serve", "--port", str(free_port()), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds-service: "), done.stderr
    assert unset in lines[0]


# ---------------------------------------------------------------- logs and audit


def test_one_audit_row_per_invocation_with_card_uuids_mapped_to_rule_ids(svc, world):
    path = svc.data_dir / "audit.sqlite3"
    time.sleep(0.6)  # rows of earlier calls are written (every 0.2 s)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        last = db.execute("SELECT coalesce(max(id), 0) FROM invocation").fetchone()[0]
    refused, _, _ = hook_request()
    assert_bare_401(call(svc, "service", None, refused))
    request, patient, _ = hook_request(world.urls["fhir_ehr"])

    response = call(svc, "service", _ec(world, aud(svc, "service")), request)

    assert response.status_code == 200
    deadline = time.monotonic() + 10
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        while True:
            rows = db.execute("SELECT * FROM invocation WHERE id > ?", (last,)).fetchall()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # and nothing more comes
        rows = [dict(r) for r in db.execute("SELECT * FROM invocation WHERE id > ?", (last,))]
        assert len(rows) == 1, rows  # the refused call left none
        [row] = rows
        cards = dict(
            db.execute(
                "SELECT card_uuid, rule_id FROM card WHERE invocation_id = ?", (row["id"],)
            ).fetchall()
        )
    assert row["hook_instance"] == request["hookInstance"]
    assert (row["service_id"], row["hook"], row["issuer"], row["status"]) == (
        SERVICE,
        "patient-view",
        ISS_EC,
        200,
    )
    assert row["patient_hash"] == patient_hash(patient, ISS_EC)
    assert json.loads(row["rule_ids"]) == rule_ids(response)
    assert json.loads(row["fetched"]) == ["medications"]
    assert cards == {c["uuid"]: c["source"]["topic"]["code"] for c in response.json()["cards"]}
    assert cards


def test_logs_hold_ids_and_timings_never_tokens_or_patient_ids(svc, world):
    """Runs last in this module: the whole log of every service started here is searched for
    every JWT, access token and patient id sent to it."""
    request, patient, access_token = hook_request(world.urls["fhir_ehr"])
    token = signed(world.keys["ec"], ISS_EC, aud(svc, "service"))
    mark = log_mark(svc)

    response = call(svc, "service", bearer(token), request)

    assert response.status_code == 200
    [record] = records_since(svc, mark)
    assert {"time", "service_id", "hook", "hook_instance", "issuer", "status", "ms"} <= set(record)
    assert record["service_id"] == SERVICE and record["hook"] == "patient-view"
    assert record["hook_instance"] == request["hookInstance"]
    assert record["issuer"] == ISS_EC and record["status"] == 200
    assert isinstance(record["ms"], int | float)
    assert record["rule_ids"] == rule_ids(response)
    assert record["patient"] == patient_hash(patient, ISS_EC)

    assert {patient, access_token, token} <= set(SECRETS)
    assert '"auth_failure"' in svc.log_text()  # refused tokens went through this log too
    for service in STARTED:
        text = service.log_text()
        for secret in SECRETS:
            assert secret not in text
            signature = secret.rsplit(".", 1)[-1]
            if secret.count(".") == 2 and len(signature) >= 40:  # a JWT's signature alone too
                assert signature not in text


# ---------------------------------------------------------------- a slow JWKS URL


def test_a_slow_jwks_url_holds_up_only_the_tokens_that_need_it():
    """In one worker, a JWKS fetch that hangs must not stall tokens of another issuer whose
    keys are cached; tokens needing the slow URL meanwhile share its one fetch."""
    from cds_service.auth import KeySource
    from cds_service.trust import Issuer, TrustConfig

    fast_key, slow_key = Key.ec("fast-1"), Key.ec("slow-1")
    fault = start_fault_server()
    slow_calls = []

    def slow(handler) -> None:
        slow_calls.append(time.monotonic())
        time.sleep(1.5)
        send_json(handler, {"keys": [slow_key.jwk()]})

    fast_url = fault.route("/fast/jwks.json", lambda h: send_json(h, {"keys": [fast_key.jwk()]}))
    slow_url = fault.route("/slow/jwks.json", slow)

    def issuer(iss: str, url: str) -> Issuer:
        empty = frozenset()
        return Issuer(iss, None, url, empty, empty, empty)

    fast, slow_issuer = issuer("https://fast.example", fast_url), issuer("https://slow", slow_url)
    trust = TrustConfig({i.iss: i for i in (fast, slow_issuer)}, allow_http_loopback=True)
    keys = KeySource(trust, ttl_s=300, min_refresh_s=30)
    assert keys.key(fast, "fast-1", None).key_id == "fast-1"  # cached from now on

    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(keys.key, slow_issuer, "slow-1", None) for _ in range(3)]
        time.sleep(0.2)  # the slow fetch is under way
        started = time.monotonic()
        assert keys.key(fast, "fast-1", None).key_id == "fast-1"
        assert time.monotonic() - started < 0.5
        assert {f.result(timeout=10).key_id for f in waiting} == {"slow-1"}
    assert len(slow_calls) == 1
