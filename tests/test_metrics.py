"""GET /metrics over HTTP against `cds-service serve` (gunicorn, 2 gevent workers, auth ON).

What an operator's Prometheus reads must be what the clients saw, summed over the workers: hook
calls and their cards, FHIR fallback GETs by outcome and their time, 401s by reason, feedback by
outcome and override reason. Only the socket peers in CDS_METRICS_ALLOW get an answer, without
a client JWT; to anyone else /metrics is an unknown path. No label holds a patient id, its hash,
a card uuid, a hookInstance, a token or a FHIR URL.
"""

from __future__ import annotations

import collections
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from conftest import EXAMPLE_NOW, load_scenario
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families
from servers import (
    BIN,
    FaultServer,
    FhirServer,
    ServiceProcess,
    free_port,
    pid_serving,
    send_json,
    start_service,
    stop,
    worker_pids,
)

from cds_service import metrics
from cds_service.audit import PatientHasher
from cds_service.errors import ConfigurationError
from cds_service.settings import Settings

SERVICE = "cramp-sciatica-patient-view"
ISS = "https://ehr.metrics-test.example.org"
KID = "metrics-ec-1"
HASH_KEY = f"metrics-hash-key-{uuid.uuid4().hex}"
OVERRIDE_SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"
FHIR_DEADLINE_S = 1.0
HOOK_ENDPOINT = "/cds-services/<service_id>"
LABEL_NAMES = {"endpoint", "service", "status", "rule", "indicator", "outcome", "reason", "store"}
KEY = ec.generate_private_key(ec.SECP384R1())
# Everything sent that must never appear in /metrics.
SENT: list[str] = []


# ---------------------------------------------------------------- the service


def slow(handler) -> None:
    time.sleep(FHIR_DEADLINE_S + 2)  # past the deadline: the service gives up first
    send_json(handler, {"resourceType": "Bundle", "type": "searchset", "entry": []})


def server_error(handler) -> None:
    send_json(handler, {"resourceType": "OperationOutcome", "issue": []}, status=500)


def html(handler) -> None:
    payload = b"<html><body>Login</body></html>"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@pytest.fixture(scope="module")
def fhir_urls(fault_server: FaultServer, fhir_server: FhirServer) -> dict[str, str]:
    prefix = f"/metrics-{uuid.uuid4().hex[:8]}"
    return {
        "ok": fhir_server.base_url,
        "timeout": fault_server.route(f"{prefix}/slow", slow),
        "http_error": fault_server.route(f"{prefix}/error", server_error),
        "invalid": fault_server.route(f"{prefix}/html", html),
        "refused": f"http://127.0.0.1:{free_port()}/fhir",  # nothing listens there
    }


@pytest.fixture(scope="module")
def svc(tmp_path_factory, fhir_urls) -> ServiceProcess:
    workdir = tmp_path_factory.mktemp("metrics-service")
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    trust = workdir / "trust.json"
    issuer = {
        "iss": ISS,
        "jwks": {"keys": [{**jwk, "kid": KID, "alg": "ES384", "use": "sig"}]},
        "fhir_servers": list(fhir_urls.values()),
    }
    trust.write_text(json.dumps({"allow_http_loopback": True, "issuers": [issuer]}))
    port = free_port()
    env = {
        "CDS_TRUST_CONFIG": str(trust),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_LOG_HASH_KEY": HASH_KEY,
        "CDS_FIXED_NOW": EXAMPLE_NOW,
        "CDS_FHIR_DEADLINE_S": str(FHIR_DEADLINE_S),
    }
    service = start_service(workdir, env, workers=2, auth=True, port=port)
    yield service
    stop(service.process)


def token(svc: ServiceProcess, path: str, **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": svc.base_url + path,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        **overrides,
    }
    signed = jwt.encode(claims, KEY, "ES384", headers={"kid": KID, "typ": "JWT"})
    SENT.extend([signed, claims["jti"]])
    return signed


def hook_request(scenario: str = "association-both-features", **changes) -> dict:
    """The scenario's request, for a patient id of its own (every reference to it renamed)."""
    request, _ = load_scenario(scenario)
    patient = f"pt-{uuid.uuid4().hex[:16]}"
    request = json.loads(json.dumps(request).replace(request["context"]["patientId"], patient))
    request["hookInstance"] = str(uuid.uuid4())
    request.update(changes)
    SENT.extend([request["hookInstance"], request["context"]["patientId"]])
    return request


def call(svc: ServiceProcess, body: dict, path: str = f"/cds-services/{SERVICE}", **headers):
    headers.setdefault("Authorization", f"Bearer {token(svc, path)}")
    return requests.post(svc.base_url + path, json=body, headers=headers, timeout=30)


# ---------------------------------------------------------------- reading /metrics

Samples = dict[tuple[str, frozenset], float]


def scrape(base_url: str) -> tuple[str, Samples]:
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def eventually(read: Callable[[], float], expected: float, seconds: float = 10) -> float:
    """`read()` once it equals `expected` (the FHIR client's threads may record a moment after
    the answer was sent), or its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def get_from(base_url: str, path: str, source: str, headers: dict | None = None):
    """GET `path` from the source address `source` (127.0.0.2 is loopback, but another peer)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---------------------------------------------------------------- counted over both workers


def pinned_connections(svc: ServiceProcess, body: Callable[[], dict]):
    """A keep-alive connection served by each of the two workers, found by opening connections
    (each with one hook call) until both workers have one; every answer is returned too."""
    port = urlsplit(svc.base_url).port
    deadline = time.monotonic() + 20
    while len(workers := worker_pids(svc.process)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2
    pinned: dict[int, http.client.HTTPConnection] = {}
    answers = []
    while len(pinned) < 2 and time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.connect()
        answers.append(post_on(svc, connection, body()))
        pid = pid_serving(connection.sock.getsockname()[1], port, workers)
        if pid is not None and pid not in pinned:
            pinned[pid] = connection
        else:
            connection.close()
    assert len(pinned) == 2, "no connection reached the second worker"
    return list(pinned.values()), answers


def post_on(svc: ServiceProcess, connection: http.client.HTTPConnection, body: dict) -> dict:
    path = f"/cds-services/{SERVICE}"
    headers = {"Authorization": f"Bearer {token(svc, path)}", "Content-Type": "application/json"}
    connection.request("POST", path, body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    return answer


def test_hook_calls_and_cards_are_counted_over_both_workers(svc):
    _, before = scrape(svc.base_url)
    connections, answers = pinned_connections(svc, hook_request)
    for index, connection in enumerate(connections):
        for _ in range(3 + index):  # 3 calls on one worker, 4 on the other
            answers.append(post_on(svc, connection, hook_request()))
        connection.close()
    _, after = scrape(svc.base_url)

    calls = len(answers)
    labels = {"endpoint": HOOK_ENDPOINT, "service": SERVICE}
    assert delta(before, after, "cds_http_requests_total", **labels, status="200") == calls
    assert delta(before, after, "cds_http_request_duration_seconds_count", **labels) == calls
    assert delta(before, after, "cds_http_request_duration_seconds_sum", **labels) > 0
    shown = collections.Counter(
        (card["source"]["topic"]["code"], card["indicator"])
        for answer in answers
        for card in answer["cards"]
    )
    assert len(shown) == 2  # this scenario's two cards, on every call
    for (rule, indicator), count in shown.items():
        assert delta(before, after, "cds_cards_total", rule=rule, indicator=indicator) == count
    assert delta(before, after, "cds_cards_total") == sum(shown.values())


def test_the_latency_histogram_buckets_are_cumulative_and_end_at_the_count(svc):
    call(svc, hook_request())
    _, samples = scrape(svc.base_url)
    labels = {"endpoint": HOOK_ENDPOINT, "service": SERVICE}
    buckets = sorted(
        (float(dict(have)["le"]), value)
        for (name, have), value in samples.items()
        if name == "cds_http_request_duration_seconds_bucket" and set(labels.items()) <= have
    )
    assert [le for le, _ in buckets] == [*metrics.HTTP_BUCKETS, float("inf")]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == total(samples, "cds_http_request_duration_seconds_count", **labels)


def test_unknown_services_and_paths_are_not_labels(svc):
    _, before = scrape(svc.base_url)
    made_up = f"no-such-service-{uuid.uuid4().hex}"
    assert call(svc, hook_request(), path=f"/cds-services/{made_up}").status_code == 404
    path = f"/x-{uuid.uuid4().hex}"
    response = requests.get(svc.base_url + path, timeout=10)
    assert response.status_code == 401  # auth runs first: an unknown path is a 401 too
    text, after = scrape(svc.base_url)
    assert made_up not in text and path not in text
    assert (
        delta(before, after, "cds_http_requests_total", endpoint=HOOK_ENDPOINT, service="other")
        == 1
    )
    assert delta(before, after, "cds_http_requests_total", endpoint="unmatched", status="401") == 1


# ---------------------------------------------------------------- FHIR fallback


def test_fhir_fallback_requests_are_counted_by_outcome(svc, fhir_server, fhir_urls):
    patient = f"metrics-{uuid.uuid4().hex[:12]}"
    fhir_server.put({"resourceType": "Patient", "id": patient, "gender": "female"})
    SENT.append(patient)
    _, before = scrape(svc.base_url)
    mark = fhir_server.mark()
    statuses = {}
    for outcome, url in fhir_urls.items():
        body = hook_request("cramps-only", fhirServer=url)
        body["context"]["patientId"] = patient
        del body["prefetch"]  # all five queries go to the FHIR server
        statuses[outcome] = call(svc, body).status_code
    assert statuses == {
        "ok": 200,
        "timeout": 412,
        "http_error": 412,
        "invalid": 412,
        "refused": 412,
    }
    sent_ok = len(fhir_server.requests_since(mark))
    assert sent_ok == 5

    def counted(outcome: str) -> float:
        return delta(before, scrape(svc.base_url)[1], "cds_fhir_requests_total", outcome=outcome)

    for outcome in metrics.FHIR_OUTCOMES:
        assert eventually(lambda o=outcome: counted(o), 5) == 5, outcome
    _, after = scrape(svc.base_url)
    timed = {"outcome": "timeout"}
    assert delta(before, after, "cds_fhir_request_duration_seconds_count", **timed) == 5
    # Each timed-out GET waited for about the deadline: not under 0.5 s, not over 2 s.
    assert delta(before, after, "cds_fhir_request_duration_seconds_bucket", **timed, le="0.5") == 0
    assert delta(before, after, "cds_fhir_request_duration_seconds_bucket", **timed, le="2.0") == 5
    assert delta(before, after, "cds_fhir_request_duration_seconds_sum", **timed) >= 5 * 0.9


# ---------------------------------------------------------------- authentication failures


def test_refused_tokens_are_counted_by_reason(svc):
    path = f"/cds-services/{SERVICE}"
    old = int(time.time()) - 3600
    replayed = token(svc, path)
    refusals = {
        "missing": None,
        "malformed": "Bearer not.a.jwt",
        "expired": f"Bearer {token(svc, path, iat=old, exp=old + 300)}",
        "audience": f"Bearer {token(svc, path, aud='https://elsewhere.example.org/x')}",
        "issuer": f"Bearer {token(svc, path, iss='https://stranger.example.org')}",
        "replay": f"Bearer {replayed}",
    }
    assert call(svc, hook_request(), Authorization=f"Bearer {replayed}").status_code == 200
    _, before = scrape(svc.base_url)
    for authorization in refusals.values():
        headers = {} if authorization is None else {"Authorization": authorization}
        response = requests.post(
            svc.base_url + path, json=hook_request(), headers=headers, timeout=30
        )
        assert response.status_code == 401
    _, after = scrape(svc.base_url)
    for reason in refusals:
        assert delta(before, after, "cds_auth_failures_total", reason=reason) == 1, reason
    assert delta(before, after, "cds_auth_failures_total") == len(refusals)
    assert delta(
        before, after, "cds_http_requests_total", endpoint=HOOK_ENDPOINT, status="401"
    ) == len(refusals)


def test_every_refusal_auth_py_can_raise_has_a_reason():
    source = (Path(metrics.__file__).parent / "auth.py").read_text()
    messages = re.findall(r'raise Unauthorized\(\s*f?"([^"]*)"', source)
    assert len(messages) >= 15
    for message in messages:
        if message.startswith("token rejected: "):
            continue  # the exception's type name: checked below
        assert metrics.auth_reason(message) != "other", message
    for name, reason in metrics._REJECTED.items():
        assert metrics.auth_reason(f"token rejected: {name}") == reason
    assert metrics.auth_reason("token rejected: SomethingNew") == "other"
    assert set(metrics._REJECTED.values()) | {r for _, r in metrics._AUTH_PREFIXES} <= set(
        metrics.AUTH_REASONS
    )


# ---------------------------------------------------------------- feedback


def feedback(svc: ServiceProcess, items: list[dict]) -> requests.Response:
    path = f"/cds-services/{SERVICE}/feedback"
    headers = {"Authorization": f"Bearer {token(svc, path)}"}
    return requests.post(svc.base_url + path, json={"feedback": items}, headers=headers, timeout=30)


def overridden(code: str, system: str = OVERRIDE_SYSTEM) -> dict:
    card = str(uuid.uuid4())
    SENT.append(card)
    return {
        "card": card,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T12:05:00Z",
        "overrideReason": {"reason": {"system": system, "code": code}},
    }


def test_feedback_is_counted_by_outcome_and_known_override_reason(svc):
    card = str(uuid.uuid4())
    SENT.append(card)
    accepted = {
        "card": card,
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-20T12:05:00Z",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
    }
    made_up = f"made-up-{uuid.uuid4().hex[:8]}"
    _, before = scrape(svc.base_url)
    items = [
        accepted,
        overridden("already-addressed"),
        overridden("already-addressed"),
        overridden("red-flag-not-recorded"),  # the imaging card's own reason
        overridden(made_up),  # a code the cards do not offer
        overridden("patient-declined", system="https://other.example.org/reasons"),
        {**overridden("x"), "overrideReason": {"userComment": "free text"}},  # no coded reason
    ]
    assert feedback(svc, items).status_code == 200
    bad = overridden("already-addressed")
    del bad["outcomeTimestamp"]
    assert feedback(svc, [bad]).status_code == 400  # refused: not counted
    text, after = scrape(svc.base_url)
    expected = {
        ("accepted", "none"): 1,
        ("overridden", "already-addressed"): 2,
        ("overridden", "red-flag-not-recorded"): 1,
        ("overridden", "other"): 2,
        ("overridden", "none"): 1,
    }
    for (outcome, reason), count in expected.items():
        got = delta(before, after, "cds_feedback_total", outcome=outcome, reason=reason)
        assert got == count, (outcome, reason)
    assert delta(before, after, "cds_feedback_total") == len(items)
    assert made_up not in text


# ---------------------------------------------------------------- no patient data


def test_metrics_hold_no_patient_data(svc, fhir_urls):
    body = hook_request()
    patient = body["context"]["patientId"]
    answer = call(svc, body).json()
    SENT.extend(card["uuid"] for card in answer["cards"])
    text, _ = scrape(svc.base_url)
    hashed = PatientHasher(HASH_KEY, Path("unused"))
    secrets = [*SENT, hashed(patient), *(hashed(s) for s in SENT), *fhir_urls.values()]
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    names = {name for line in text.splitlines() for name in re.findall(r'(\w+)="', line)}
    assert names <= {*LABEL_NAMES, "le"}


# ---------------------------------------------------------------- who may read it


def test_metrics_need_no_token_but_only_allowed_peers_get_them(svc):
    response = requests.get(f"{svc.base_url}/metrics", timeout=10)  # no Authorization
    assert response.status_code == 200
    assert "cds_http_requests_total" in response.text
    # 127.0.0.2 is loopback but not in the default list (127.0.0.1, ::1): /metrics does not
    # exist for it, it gets what any unknown path gets (401 before 404, auth being on).
    unknown = get_from(svc.base_url, "/no-such-path", "127.0.0.2")
    assert unknown[0] == 401
    assert get_from(svc.base_url, "/metrics", "127.0.0.2") == unknown
    # The socket peer decides: a forwarded-for header is not believed.
    spoofed = get_from(svc.base_url, "/metrics", "127.0.0.2", {"X-Forwarded-For": "127.0.0.1"})
    assert spoofed == unknown
    assert requests.post(f"{svc.base_url}/metrics", timeout=10).status_code == 401


@pytest.fixture(scope="module")
def cidr_svc(tmp_path_factory) -> ServiceProcess:
    """No auth, one worker, /metrics for 10.0.0.1 and 127.0.0.0/31 (127.0.0.0 and .1 only)."""
    workdir = tmp_path_factory.mktemp("metrics-cidr")
    service = start_service(workdir, {"CDS_METRICS_ALLOW": " 10.0.0.1 , 127.0.0.0/31"}, workers=1)
    yield service
    stop(service.process)


def test_a_network_in_the_allow_list_lets_its_addresses_in_and_no_others(cidr_svc):
    status, body = get_from(cidr_svc.base_url, "/metrics", "127.0.0.1")  # inside the /31
    assert status == 200 and b"cds_http_requests_total" in body
    unknown = get_from(cidr_svc.base_url, "/no-such-path", "127.0.0.2")
    assert unknown[0] == 404
    outside = get_from(cidr_svc.base_url, "/metrics", "127.0.0.2")  # just outside the /31
    assert outside[0] == 404
    assert json.loads(outside[1])["issue"][0]["code"] == json.loads(unknown[1])["issue"][0]["code"]


def test_metrics_off_means_no_endpoint(tmp_path):
    service = start_service(tmp_path, {"CDS_METRICS_ALLOW": "off"}, workers=1)
    try:
        response = requests.get(f"{service.base_url}/metrics", timeout=10)
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"
        assert requests.get(f"{service.base_url}/health", timeout=10).status_code == 200
    finally:
        stop(service.process)


def test_a_bad_allow_list_stops_serve_with_one_line(tmp_path):
    done = subprocess.run(
        [str(BIN / "cds-service"), "serve", "--no-auth", "--port", str(free_port())],
        cwd=tmp_path,
        env={**os.environ, "CDS_DATA_DIR": str(tmp_path), "CDS_METRICS_ALLOW": "127.0.0.1,lan"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "CDS_METRICS_ALLOW" in done.stderr and "'127.0.0.1,lan'" in done.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ("127.0.0.1/32", "::1/128")),
        ("", ("127.0.0.1/32", "::1/128")),
        ("off", ()),
        (" OFF ", ()),
        ("10.0.0.1", ("10.0.0.1/32",)),
        ("10.1.2.3/8, fd00::/8", ("10.0.0.0/8", "fd00::/8")),
    ],
)
def test_the_allow_list_is_read_from_the_environment(raw, expected):
    env = {} if raw is None else {"CDS_METRICS_ALLOW": raw}
    allowed = Settings.from_env(env).metrics_allow
    assert tuple(str(ipaddress.ip_network(n)) for n in allowed) == expected


@pytest.mark.parametrize("raw", ["10.0.0.1,", "localhost", "10.0.0.0/33", "off,10.0.0.1"])
def test_a_bad_allow_list_names_the_variable(raw):
    with pytest.raises(ConfigurationError, match="CDS_METRICS_ALLOW"):
        Settings.from_env({"CDS_METRICS_ALLOW": raw})


# ---------------------------------------------------------------- worker lifecycle


def multiproc_dir(service: ServiceProcess) -> Path:
    """The directory `serve` made for its workers' metric files (named by its pid)."""
    [path] = (service.data_dir / "metrics").glob(f"*_{service.process.pid}_*")
    return path


def test_a_killed_worker_keeps_its_counts_and_the_directory_goes_at_exit(tmp_path):
    # What a `serve` killed before its exit left: removed at start when it is this host's,
    # kept when another host (a container sharing the data directory) may still use it.
    dead = dead_pid()
    host = socket.gethostname()
    left = tmp_path / "data" / "metrics" / f"{host}_{dead}_x1"
    others = tmp_path / "data" / "metrics" / f"{host}-2_{dead}_x2"
    for directory in (left, others):
        directory.mkdir(parents=True)
        (directory / "counter_1.db").write_bytes(b"")
    service = start_service(tmp_path, workers=1)
    try:
        assert not left.exists() and others.exists()
        directory = multiproc_dir(service)
        [worker] = worker_pids(service.process)
        for _ in range(3):
            assert requests.get(f"{service.base_url}/cds-services", timeout=10).status_code == 200
        _, before = scrape(service.base_url)
        discovery = {"endpoint": "/cds-services", "status": "200"}
        assert total(before, "cds_http_requests_total", **discovery) == 3
        assert (directory / f"gauge_livesum_{worker}.db").exists()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker_pids(service.process) in (set(), {worker}) and time.monotonic() < deadline:
            time.sleep(0.05)
        _, after = scrape(service.base_url)  # answered by the new worker
        assert total(after, "cds_http_requests_total", **discovery) == 3
        assert not (directory / f"gauge_livesum_{worker}.db").exists()  # child_exit ran
    finally:
        stop(service.process)
    assert not directory.exists()
    assert others.exists()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------- the stores' hooks


def test_store_errors_and_spool_depth_take_only_known_labels():
    before = total(in_process(), "cds_store_errors_total", store="audit")
    metrics.store_error("audit")
    metrics.store_error(f"store-{uuid.uuid4().hex}")
    metrics.set_spool_depth(7)
    samples = in_process()
    assert total(samples, "cds_store_errors_total", store="audit") == before + 1
    assert total(samples, "cds_store_errors_total", store="other") >= 1
    assert {dict(have)["store"] for (n, have) in samples if n == "cds_store_errors_total"} <= {
        *metrics.STORES,
        "other",
    }
    assert total(samples, "cds_audit_spool_depth") == 7
    metrics.set_spool_depth(0)


def in_process() -> Samples:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.REGISTRY).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_failure_to_count_never_fails_the_caller(monkeypatch, caplog):
    """A full disk cannot grow the metric files: stubbed, as no real server can be made to."""

    class Broken:
        def labels(self, *values):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "STORE_ERRORS", Broken())
    monkeypatch.setattr(metrics, "AUTH_FAILURES", Broken())
    metrics.store_error("audit")  # no exception
    metrics.store_error("audit")
    metrics.auth_failure("no kid")
    failures = [r.getMessage() for r in caplog.records if "metrics_failed" in r.getMessage()]
    assert failures == ['{"event": "metrics_failed", "error": "OSError"}'] * 2  # once per function


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack socket
        ("127.0.0.2", False),
        ("::2", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_the_peer_is_matched_as_an_address(peer, allowed):
    networks = tuple(ipaddress.ip_network(n) for n in Settings().metrics_allow)
    assert metrics._peer_allowed(peer, networks) is allowed
