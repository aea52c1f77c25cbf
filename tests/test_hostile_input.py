"""Hostile input over HTTP against the served workers (issue 13, points 2-7).

Each finding of the adversarial review is a regression test here, against `cds-service serve`
under gunicorn as an operator runs it: slow clients, replayed and ill-typed tokens, URLs two
parsers read differently, oversized integers, echoed upstream text, feedback spellings and
sizes, the Host header and CORS. Every call has a generous time bound: an answer that comes
only after a worker was killed is a failure too.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
import requests
from conftest import EXAMPLE_NOW, load_scenario
from cryptography.hazmat.primitives.asymmetric import ec
from servers import (
    FaultServer,
    ServiceProcess,
    free_port,
    send_json,
    start_service,
    stop,
)

SERVICE = "cramp-sciatica-patient-view"
CALL_BOUND_S = 10.0  # generous: a hung worker takes 30 s to be killed
LEEWAY_S = 3


def timed(call: Callable[[], requests.Response], bound: float = CALL_BOUND_S):
    started = time.monotonic()
    response = call()
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"answered after {elapsed:.1f} s (bound {bound} s)"
    return response


def post(svc: ServiceProcess, path: str, body: object = None, **kwargs) -> requests.Response:
    if body is not None:
        kwargs["json"] = body
    return timed(lambda: requests.post(f"{svc.base_url}{path}", timeout=30, **kwargs))


def expressions(response: requests.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


def scenario(missing: str | None = None) -> tuple[dict, str]:
    """The cramps-only request for a fresh patient and hook instance (optionally without one
    prefetch key, to be read from fhirServer)."""
    request, _ = load_scenario("cramps-only")
    patient = f"hostile-{uuid.uuid4().hex[:12]}"
    request = json.loads(json.dumps(request).replace("cramps-only", patient))
    request["hookInstance"] = str(uuid.uuid4())
    if missing:
        del request["prefetch"][missing]
    return request, patient


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> ServiceProcess:
    """Authentication off (the README's single-machine default), two workers."""
    service = start_service(
        tmp_path_factory.mktemp("hostile"), {"CDS_FIXED_NOW": EXAMPLE_NOW}, workers=2
    )
    yield service
    stop(service.process)


# ------------------------------------------------------------------ 2. slow clients


def _trickle(port: int, kind: str, stop_event: threading.Event, opened: list) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if kind == "body":
            sock.sendall(
                f"POST /cds-services/{SERVICE} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
            )
            byte = b"{"
        else:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            byte = b"X"
        opened.append(kind)
        while not stop_event.is_set():
            try:
                sock.sendall(byte)
            except OSError:
                return
            stop_event.wait(2)


def test_fifty_slow_clients_cannot_starve_health_or_hook_calls(svc):
    """Issue 13: 20 sockets trickling a body (or headers) left /health unanswered 15/15."""
    port = int(svc.base_url.rsplit(":", 1)[1])
    stop_event, opened = threading.Event(), []
    threads = [
        threading.Thread(
            target=_trickle, args=(port, ("body", "headers")[i % 2], stop_event, opened)
        )
        for i in range(50)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(opened) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(opened) == 50
        time.sleep(0.5)  # every slow connection has been accepted and is being read
        request, _ = scenario()
        for _ in range(5):
            health = timed(lambda: requests.get(f"{svc.base_url}/health", timeout=5), 1.0)
            assert health.status_code == 200
            request["hookInstance"] = str(uuid.uuid4())
            hook = timed(
                lambda: requests.post(
                    f"{svc.base_url}/cds-services/{SERVICE}", json=request, timeout=5
                ),
                1.0,
            )
            assert hook.status_code == 200, hook.text
            assert hook.json()["cards"]
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(10)


# ------------------------------------------------------------------ 3 and 5. tokens


@pytest.fixture(scope="module")
def auth(tmp_path_factory):
    """Authentication on: one issuer with an inline EC key; a leeway of LEEWAY_S seconds."""
    workdir = tmp_path_factory.mktemp("hostile-auth")
    key = ec.generate_private_key(ec.SECP384R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    issuer = "https://hostile-ehr.example.org"
    trust = workdir / "trust.json"
    trust.write_text(
        json.dumps({"issuers": [{"iss": issuer, "jwks": {"keys": [{**public, "kid": "k1"}]}}]})
    )
    port = free_port()
    env = {
        "CDS_TRUST_CONFIG": str(trust),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_JWT_LEEWAY_S": str(LEEWAY_S),
        "CDS_FIXED_NOW": EXAMPLE_NOW,
    }
    service = start_service(workdir, env, workers=2, auth=True, port=port)
    yield service, key, issuer
    stop(service.process)


def token(auth, **claims: object) -> str:
    service, key, issuer = auth
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": f"{service.base_url}/cds-services/{SERVICE}",
        "exp": now + 60,
        "iat": now,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    return jwt.encode(payload, key, "ES384", headers={"kid": "k1", "typ": "JWT"})


def call_with(auth, bearer: str) -> requests.Response:
    request, _ = scenario()
    return post(auth[0], f"/cds-services/{SERVICE}", request, headers={"Authorization": bearer})


def test_a_token_replayed_after_its_exp_but_within_the_leeway_is_refused(auth):
    """Issue 13: the replay store forgot a jti at `exp` while the verifier still accepted the
    token for its leeway; it was replayed three times."""
    exp = int(time.time()) + 1
    bearer = f"Bearer {token(auth, exp=exp)}"
    assert call_with(auth, bearer).status_code == 200

    while time.time() < exp + 0.5:  # past exp, well within the leeway
        time.sleep(0.1)
    for _ in range(3):
        assert call_with(auth, bearer).status_code == 401

    fresh_but_expired = f"Bearer {token(auth, exp=int(time.time()) - LEEWAY_S - 2)}"
    assert call_with(auth, fresh_but_expired).status_code == 401


ILL_TYPED_CLAIMS = {
    "exp as a string": {"exp": str(int(time.time()) + 60)},
    "iat as a string": {"iat": str(int(time.time()))},
    "exp true": {"exp": True},
    "exp infinite": {"exp": float("inf")},
    "exp of 400 digits": {"exp": 10**400},
    "nbf as a string": {"nbf": "0"},
    "jti a number": {"jti": 12345},
    "jti an object": {"jti": {"a": 1}},
    "jti of 1,000 characters": {"jti": "j" * 1_000},
    "tenant a list": {"tenant": ["a"]},
}


@pytest.mark.parametrize("claims", ILL_TYPED_CLAIMS.values(), ids=list(ILL_TYPED_CLAIMS))
def test_a_claim_of_the_wrong_type_is_a_bare_401(auth, claims):
    """Issue 13: a signed token whose `exp` is a string gave 500."""
    response = call_with(auth, f"Bearer {token(auth, **claims)}")
    assert response.status_code == 401, response.text
    assert response.json()["issue"][0]["diagnostics"] == "Unauthorized"


# ------------------------------------------------------------------ 4. one URL parser


def empty_searchset(handler) -> None:
    send_json(handler, {"resourceType": "Bundle", "type": "searchset", "entry": []})


def _fhir_route(fault_server: FaultServer) -> tuple[str, str]:
    prefix = f"/fhir-{uuid.uuid4().hex[:8]}"
    return fault_server.route(prefix, empty_searchset), prefix


MALFORMED = {
    "backslash before userinfo": "http://127.0.0.1:{port}\\@localhost:9/fhir",
    "fragment": "{base}#fragment",
    "userinfo": "http://user@127.0.0.1:{port}{prefix}",
    "upper-case host": "http://LOCALHOST:{port}{prefix}",
    "short IPv4": "http://127.1:{port}{prefix}",
    "hexadecimal IPv4": "http://0x7f000001:{port}{prefix}",
    "trailing dot": "http://localhost.:{port}{prefix}",
    "percent-encoded host": "http://%6cocalhost:{port}{prefix}",
    "dot segments": "{base}/../other",
    "space": "http://127.0.0.1:{port} {prefix}",
    "upper-case scheme": "HTTP://127.0.0.1:{port}{prefix}",
}


@pytest.mark.parametrize("template", MALFORMED.values(), ids=list(MALFORMED))
def test_a_fhir_server_url_other_parsers_could_read_differently_is_a_400(
    svc, fault_server, template
):
    """Issue 13: `http://127.0.0.1:18192\\@localhost:9/fhir` passed the loopback check (urlsplit
    saw localhost) while requests connected to 127.0.0.1:18192 with the access token; a
    `#fragment` passed and silently read nothing."""
    base, prefix = _fhir_route(fault_server)
    port = fault_server.server.server_port
    server = template.format(base=base, port=port, prefix=prefix)
    request, _ = scenario(missing="conditions")
    request["fhirServer"] = server
    request["fhirAuthorization"] = {
        "access_token": f"at-{uuid.uuid4().hex}",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "crampcds",
    }
    seen = len(fault_server.seen)

    response = post(svc, f"/cds-services/{SERVICE}", request)

    assert response.status_code == 400, response.text
    assert expressions(response) == ["fhirServer"]
    assert "fhirServer" in response.json()["issue"][0]["diagnostics"]
    assert len(fault_server.seen) == seen, "nothing may be sent to a URL the service refused"


def test_a_well_formed_loopback_fhir_server_is_still_read(svc, fault_server):
    base, prefix = _fhir_route(fault_server)
    request, patient = scenario(missing="conditions")
    request["fhirServer"] = base

    response = post(svc, f"/cds-services/{SERVICE}", request)

    assert response.status_code == 200, response.text
    assert [path for path, _ in fault_server.requests_to(prefix)] == [
        f"{prefix}/Condition?patient={patient}"
    ]


# ------------------------------------------------------------------ 5. no input gives 500


@pytest.mark.parametrize("path", [f"/cds-services/{SERVICE}", f"/cds-services/{SERVICE}/feedback"])
def test_an_integer_of_over_4300_digits_is_a_400_naming_the_body(svc, path):
    """Issue 13: an integer of over 4,300 digits gave 500."""
    body = '{"hook": "patient-view", "n": ' + "7" * 5000 + "}"
    response = post(svc, path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert expressions(response) == ["body"]
    assert "digits" in response.json()["issue"][0]["diagnostics"]


def test_the_fhir_servers_error_text_is_never_echoed_nor_the_token_in_any_case(svc, fault_server):
    """Issue 13: the access token appeared in a 412 when the FHIR server echoed it in another
    letter case."""
    access_token = f"at-{uuid.uuid4().hex}"
    prefix = f"/echo-{uuid.uuid4().hex[:8]}"

    def echo(handler) -> None:
        said = handler.headers.get("Authorization", "")
        text = f"UPSTREAM-TEXT invalid token {said.upper()} / {said.swapcase()}"
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "login", "diagnostics": text}],
        }
        send_json(handler, outcome, 401)

    request, _ = scenario(missing="conditions")
    request["fhirServer"] = fault_server.route(prefix, echo)
    request["fhirAuthorization"] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "crampcds",
    }

    response = post(svc, f"/cds-services/{SERVICE}", request)

    assert response.status_code == 412, response.text
    assert fault_server.requests_to(prefix), "the FHIR server was never asked"
    assert access_token.lower() not in response.text.lower()
    assert "UPSTREAM-TEXT" not in response.text
    assert "HTTP 401" in response.text  # what happened is still said
    assert access_token.lower() not in svc.log_text().lower()


# ------------------------------------------------------------------ 6. feedback


def issued_card(svc: ServiceProcess) -> tuple[str, str]:
    """(card uuid, rule id) of a card the service issued just now."""
    request, _ = scenario()
    response = post(svc, f"/cds-services/{SERVICE}", request)
    assert response.status_code == 200, response.text
    card = response.json()["cards"][0]
    return card["uuid"], card["source"]["topic"]["code"]


def feedback(svc: ServiceProcess, item: dict) -> requests.Response:
    return post(svc, f"/cds-services/{SERVICE}/feedback", {"feedback": [item]})


OVERSIZED = {
    "a suggestion id of 1 MB": (
        {"outcome": "accepted", "acceptedSuggestions": [{"id": "s" * 1_000_000}]},
        "feedback[0].acceptedSuggestions[0].id",
    ),
    "100 suggestions": (
        {"outcome": "accepted", "acceptedSuggestions": [{"id": f"s{i}"} for i in range(100)]},
        "feedback[0].acceptedSuggestions",
    ),
    "a reason code of 1 MB": (
        {"outcome": "overridden", "overrideReason": {"reason": {"code": "c" * 1_000_000}}},
        "feedback[0].overrideReason.reason.code",
    ),
    "a reason system of 10 KB": (
        {
            "outcome": "overridden",
            "overrideReason": {"reason": {"system": "http://x/" + "y" * 10_000, "code": "c"}},
        },
        "feedback[0].overrideReason.reason.system",
    ),
}


@pytest.mark.parametrize(("item", "field"), OVERSIZED.values(), ids=list(OVERSIZED))
def test_oversized_feedback_fields_are_refused_naming_the_field(svc, item, field):
    """Issue 13: feedback stored 4.9 MB ids and reason codes (the analytics page grew to
    4.9 MB)."""
    card, _ = issued_card(svc)
    body = {"card": card, "outcomeTimestamp": "2026-11-20T12:05:00Z", **item}
    response = feedback(svc, body)
    assert response.status_code == 400, response.text[:300]
    assert expressions(response) == [field]
    assert len(response.content) < 2000  # the value is never echoed


def test_one_outcome_in_four_spellings_is_stored_once(svc):
    """Issue 13: the same outcome re-sent as `urn:uuid:...`, upper case or `.000Z` was stored
    four times."""
    card, _ = issued_card(svc)
    spellings = [
        (card, "2026-11-20T12:05:00Z"),
        (f"urn:uuid:{card}", "2026-11-20T12:05:00Z"),
        (card.upper(), "2026-11-20T12:05:00Z"),
        (card, "2026-11-20T12:05:00.000Z"),
        (f"urn:uuid:{card.upper()}", "2026-11-20T13:05:00+01:00"),
    ]
    stored = []
    for spelling, timestamp in spellings:
        response = feedback(
            svc, {"card": spelling, "outcome": "overridden", "outcomeTimestamp": timestamp}
        )
        assert response.status_code == 200, response.text
        stored.append(response.json()["stored"])
    assert stored == [1, 0, 0, 0, 0]

    later = feedback(
        svc, {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00.5Z"}
    )
    assert later.json()["stored"] == 1  # another instant is another outcome


def analytics_rows(svc: ServiceProcess) -> dict[str, dict]:
    response = timed(
        lambda: requests.get(
            f"{svc.base_url}/console/analytics.csv",
            params={"from": "2000-01-01", "to": "2999-12-31"},
            timeout=30,
        )
    )
    assert response.status_code == 200, response.text
    return {row["rule_id"]: row for row in csv.DictReader(io.StringIO(response.text))}


def test_feedback_for_a_card_never_issued_is_kept_apart_from_the_counts(svc):
    card, rule = issued_card(svc)
    time.sleep(0.5)  # the audit trail writes in batches every 0.2 s
    before = analytics_rows(svc)
    marker = f"NOT-OURS-{uuid.uuid4().hex[:8]}"
    ours = {
        "card": f"urn:uuid:{card.upper()}",  # an issued card in another spelling is ours
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T12:06:00Z",
        "overrideReason": {"reason": {"code": "not-relevant"}},
    }
    stranger = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T12:06:00Z",
        "overrideReason": {"reason": {"code": marker}},
    }
    assert feedback(svc, ours).json()["stored"] == 1
    assert feedback(svc, stranger).json()["stored"] == 1

    after = analytics_rows(svc)
    unknown = "(card not in the audit trail)"
    assert int(after[rule]["overridden"]) == int(before[rule]["overridden"]) + 1
    assert (
        int(after[unknown]["overridden"])
        == int(before.get(unknown, {"overridden": 0})["overridden"]) + 1
    )
    assert marker not in json.dumps(after)  # a stranger's reason codes are not listed


# ------------------------------------------------------------------ 7. Host and CORS


def test_the_console_redirect_is_not_built_from_the_host_header(svc):
    """Issue 13: a `Host` header built the `/console` redirect."""
    response = timed(
        lambda: requests.get(
            f"{svc.base_url}/console",
            headers={"Host": "evil.example"},
            allow_redirects=False,
            timeout=30,
        )
    )
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["Location"] == "/console/"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
        ("null", False),
        ("https://sandbox.cds-hooks.org", True),
        ("http://localhost:3000", True),
        ("http://127.0.0.1:8080", True),
    ],
)
def test_without_auth_cors_allows_loopback_pages_and_the_public_sandbox_only(svc, origin, allowed):
    """Issue 13: any web page could POST feedback to a local --no-auth service (CORS `*`)."""
    path = f"{svc.base_url}/cds-services/{SERVICE}/feedback"
    preflight = timed(
        lambda: requests.options(
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
            timeout=30,
        )
    )
    granted = preflight.headers.get("Access-Control-Allow-Origin")
    assert granted == (origin if allowed else None)
    discovery = timed(
        lambda: requests.get(f"{svc.base_url}/cds-services", headers={"Origin": origin}, timeout=30)
    )
    assert discovery.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


def test_a_text_plain_post_from_a_web_page_stores_no_feedback(svc):
    """A cross-origin form or `text/plain` fetch needs no preflight: it must be refused."""
    card, _ = issued_card(svc)
    body = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:07:00Z"}
    response = post(
        svc,
        f"/cds-services/{SERVICE}/feedback",
        data=json.dumps({"feedback": [body]}),
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert response.status_code == 415
    assert "Access-Control-Allow-Origin" not in response.headers
