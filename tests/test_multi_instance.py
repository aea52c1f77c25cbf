"""Several instances behind a real nginx running deploy/nginx.conf (tests/cluster.py).

- An instance killed with SIGKILL under load: the other keeps serving, only the POSTs in flight
  on the killed one fail (502 from nginx, an OperationOutcome), every call sent after it died
  succeeds, and a GET in flight is retried on the other instance.
- nginx refuses a body over the service's limit itself, with an OperationOutcome; one of
  exactly the limit goes through.
- With CDS_DATABASE_URL and CDS_REDIS_URL shared by both instances (a fresh PostgreSQL database
  migrated with `cds-service db upgrade`, a Redis key prefix of its own): a token used on one
  instance is refused on the other, directly and through nginx; feedback is stored once
  whichever instance takes it; `cds-service analytics --json` counts every call of both.
  Without PostgreSQL or Redis these skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt
import pytest
import requests
from cluster import Cluster, cluster
from conftest import EXAMPLE_NOW, load_scenario
from cryptography.hazmat.primitives.asymmetric import ec
from servers import BIN, REDIS_TEST_URL, free_port, postgres_database, redis_prefix

from cds_service.rules import RULE_IDS
from cds_service.settings import Settings

SERVICE = "cramp-sciatica-patient-view"
POST_THREADS = 4
# Access log lines of deploy/nginx.conf's `cds` format.
ACCESS = re.compile(
    r'^\S+ "(?P<method>\w+) (?P<path>\S+)" (?P<status>\d{3}) \d+ rt=\S+ '
    r"upstream=(?P<upstream>.*?) us=(?P<us>.*?) ut="
)


def access_log(running: Cluster) -> list[re.Match]:
    return [
        m for line in running.nginx.log_path.read_text().splitlines() if (m := ACCESS.match(line))
    ]


def logged(running: Cluster, enough: Callable[[list[re.Match]], bool]) -> list[re.Match]:
    """The access log once `enough` says it holds what the test waits for (nginx writes a
    request's line just after sending its answer, so a client may read the answer first)."""
    deadline = time.monotonic() + 10
    while not enough(log := access_log(running)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return log


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two instances behind nginx, never harmed by the tests that use it."""
    with cluster(
        tmp_path_factory.mktemp("pair"), count=2, env={"CDS_FIXED_NOW": EXAMPLE_NOW}
    ) as running:
        yield running


def test_nginx_spreads_calls_over_both_instances(pair):
    request, _ = load_scenario("mixed-three-causes")
    http = requests.Session()
    for _ in range(6):
        answer = http.post(f"{pair.url}/cds-services/{SERVICE}", json=request, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cards"]
    both = {pair.address(0), pair.address(1)}
    log = logged(pair, lambda log: {m["upstream"] for m in log if m["method"] == "POST"} >= both)
    assert {m["upstream"] for m in log if m["method"] == "POST"} == both
    assert requests.get(f"{pair.url}/health", timeout=10).json()["status"] == "ok"


def test_body_limit_at_nginx_equals_the_service_limit(pair):
    """nginx's client_max_body_size is the service's CDS_MAX_BODY_BYTES: a body of exactly the
    limit reaches an instance and is answered; one byte more is refused by nginx with 413 and
    an OperationOutcome, and no instance sees it."""
    limit = Settings().max_body_bytes
    request, _ = load_scenario("mixed-three-causes")
    raw = json.dumps(request).encode()
    at_limit = raw + b" " * (limit - len(raw))  # JSON allows trailing whitespace
    url = f"{pair.url}/cds-services/{SERVICE}"
    headers = {"Content-Type": "application/json"}

    inside = requests.post(url, data=at_limit, headers=headers, timeout=60)
    assert inside.status_code == 200, inside.text
    assert inside.json()["cards"]

    outside = requests.post(url, data=at_limit + b" ", headers=headers, timeout=60)
    assert outside.status_code == 413
    assert outside.headers["Content-Type"].startswith("application/json")
    outcome = outside.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert str(limit) in outcome["issue"][0]["diagnostics"]
    refused = logged(pair, lambda log: any(m["status"] == "413" for m in log))
    refused = [m for m in refused if m["status"] == "413"]
    assert [m["upstream"] for m in refused] == ["-"]  # refused by nginx itself


def test_a_shared_server_down_does_not_take_the_instances_out_of_nginx(tmp_path):
    """The service answers 503 only when a server all instances share does not answer
    (PostgreSQL: /health/ready, feedback; Redis: authenticated calls), so no other instance would
    do better: nginx must neither retry it nor count it against the instance. With PostgreSQL
    down, /health/ready through nginx is 503, and hook calls still answer with cards (their
    audit rows spool) instead of nginx's 502 "no live upstreams"."""
    request, _ = load_scenario("mixed-three-causes")
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/cds"  # nothing listens there
    env = {"CDS_FIXED_NOW": EXAMPLE_NOW, "CDS_DATABASE_URL": down}
    with cluster(tmp_path, count=2, env=env) as running:
        for _ in range(4):
            ready = requests.get(f"{running.url}/health/ready", timeout=30)
            assert ready.status_code == 503
            assert ready.json()["database"] == "unavailable"
        for _ in range(4):
            answer = requests.post(
                f"{running.url}/cds-services/{SERVICE}", json=request, timeout=30
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["cards"]
        log = logged(running, lambda log: sum(m["method"] == "POST" for m in log) >= 4)
    # Each readiness answer came from one instance: none was passed to the other.
    assert all("," not in m["upstream"] for m in log if m["path"] == "/health/ready")


@dataclass
class Call:
    method: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all
    body: str


def _load(url: str, method: str, body: bytes | None, stop: threading.Event, calls: list[Call]):
    http = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            answer = http.request(
                method, url, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            status, text = answer.status_code, answer.text
        except requests.RequestException as exc:
            status, text = None, type(exc).__name__
        calls.append(Call(method, started, time.monotonic(), status, text))


def test_an_instance_killed_under_load_only_fails_the_calls_in_flight_on_it(tmp_path):
    request, _ = load_scenario("mixed-three-causes")
    body = json.dumps(request).encode()
    with cluster(tmp_path, count=2, env={"CDS_FIXED_NOW": EXAMPLE_NOW}) as running:
        stop, calls = threading.Event(), []
        hook = f"{running.url}/cds-services/{SERVICE}"
        threads = [
            threading.Thread(target=_load, args=(hook, "POST", body, stop, calls))
            for _ in range(POST_THREADS)
        ]
        threads.append(
            threading.Thread(
                target=_load, args=(f"{running.url}/cds-services", "GET", None, stop, calls)
            )
        )
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            killing = time.monotonic()
            running.kill(0)
            dead = time.monotonic()
            # Past fail_timeout (5 s): nginx tries the dead instance again, and the POST it
            # could not send there goes to the other one.
            time.sleep(6.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        log = access_log(running)

    posts = [c for c in calls if c.method == "POST"]
    gets = [c for c in calls if c.method == "GET"]
    before = [c for c in posts if c.ended < killing]
    after = [c for c in posts if c.started > dead]
    failed = [c for c in posts if c.status != 200]
    killed, survivor = running.address(0), running.address(1)
    served_before = {m["upstream"] for m in log if m["method"] == "POST" and m["us"] == "200"}
    print(
        f"\n{len(posts)} hook calls ({len(before)} before the kill, {len(after)} after), "
        f"{len(failed)} failed (in flight on the killed instance), {len(gets)} GETs"
    )
    assert {killed, survivor} <= served_before  # both served before the kill
    assert len(before) >= 20 and len(after) >= 50
    # Only the calls in flight when the instance died failed, at most one per client thread:
    # nginx's 502 OperationOutcome, or (when the instance died while nginx was passing its
    # answer on) an answer cut short.
    for call in failed:
        assert call.started < dead and call.ended >= killing, call
        if call.status is None:
            assert call.body == "ChunkedEncodingError", call
        else:
            assert call.status == 502, call
            assert json.loads(call.body)["resourceType"] == "OperationOutcome"
    assert len(failed) <= POST_THREADS
    # Everything sent after it died was answered, and every GET (a GET in flight is retried).
    assert all(c.status == 200 for c in after)
    assert gets and all(c.status == 200 for c in gets)
    # nginx's side: each 502 came from the killed instance; the calls that could not be sent to
    # it (connection refused: right after the kill, and again when fail_timeout had passed) were
    # passed to the survivor and answered there.
    failed_at_nginx = [m for m in log if m["status"] == "502"]
    assert len(failed_at_nginx) == sum(c.status == 502 for c in failed)
    assert all(m["upstream"] == killed for m in failed_at_nginx)
    retried = [m for m in log if m["upstream"] == f"{killed}, {survivor}"]
    assert retried and all(m["status"] == "200" for m in retried)


# ---------------------------------------------------- two instances on PostgreSQL and Redis

ISSUER = "https://ehr.multi-instance.test"
KID = "multi-1"


@dataclass
class Shared:
    """The cluster on shared stores, and a ledger of what every test did to it: the cards of
    every answered hook call and every feedback outcome stored, so that the analytics can be
    checked whatever ran before."""

    running: Cluster
    env: dict[str, str]
    key: ec.EllipticCurvePrivateKey
    fired: Counter = field(default_factory=Counter)  # rule id -> cards shown
    overridden: Counter = field(default_factory=Counter)  # rule id -> outcomes stored
    card_rules: dict[str, str] = field(default_factory=dict)  # card uuid -> rule id

    def token(self, path: str) -> str:
        """A fresh client JWT for the endpoint `path`, as the EHR calls it (through nginx: its
        URL is CDS_PUBLIC_BASE_URL)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": f"{self.running.url}{path}",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.key, "ES384", headers={"kid": KID, "typ": "JWT"})

    def hook(self, base_url: str, token: str | None = None) -> requests.Response:
        path = f"/cds-services/{SERVICE}"
        request, _ = load_scenario("mixed-three-causes")
        request["hookInstance"] = str(uuid.uuid4())
        answer = requests.post(
            f"{base_url}{path}",
            json=request,
            headers={"Authorization": f"Bearer {token or self.token(path)}"},
            timeout=30,
        )
        if answer.status_code == 200:
            for card in answer.json()["cards"]:
                rule = card["source"]["topic"]["code"]
                self.fired[rule] += 1
                self.card_rules[card["uuid"]] = rule
        return answer

    def feedback(self, base_url: str, card: str) -> requests.Response:
        path = f"/cds-services/{SERVICE}/feedback"
        body = {
            "feedback": [
                {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00Z"}
            ]
        }
        answer = requests.post(
            f"{base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token(path)}"},
            timeout=30,
        )
        if answer.status_code == 200:
            self.overridden[self.card_rules[card]] += answer.json()["stored"]
        return answer

    def analytics(self) -> dict[str, dict]:
        done = subprocess.run(
            [str(BIN / "cds-service"), "analytics", "--from", "2000-01-01", "--to", "2100-12-31"]
            + ["--json"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return {row["rule_id"]: row for row in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("shared")
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID}
    trust = workdir / "trust.json"
    trust.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]}))
    nginx_port = free_port()
    with postgres_database() as database_url, redis_prefix() as prefix:
        env = {
            "CDS_DATABASE_URL": database_url,
            "CDS_REDIS_URL": REDIS_TEST_URL,
            "CDS_REDIS_KEY_PREFIX": prefix,
            "CDS_TRUST_CONFIG": str(trust),
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{nginx_port}",
            "CDS_FIXED_NOW": EXAMPLE_NOW,
            "CDS_DATA_DIR": str(workdir / "cli-data"),
        }
        # As an operator deploys: the migration once, then the instances.
        upgrade = subprocess.run(
            [str(BIN / "cds-service"), "db", "upgrade"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        instance_env = {k: v for k, v in env.items() if k != "CDS_DATA_DIR"}
        with cluster(
            workdir, count=2, env=instance_env, auth=True, nginx_port=nginx_port
        ) as running:
            yield Shared(running, env, key)


def test_a_token_used_on_one_instance_is_refused_on_the_other(shared):
    one, two = (i.base_url for i in shared.running.instances)
    path = f"/cds-services/{SERVICE}"
    token = shared.token(path)
    assert shared.hook(one, token).status_code == 200
    assert shared.hook(two, token).status_code == 401
    assert shared.hook(shared.running.url, token).status_code == 401
    # A token first used through nginx (on either instance) is refused by both directly.
    fresh = shared.token(path)
    assert shared.hook(shared.running.url, fresh).status_code == 200
    assert shared.hook(one, fresh).status_code == 401
    assert shared.hook(two, fresh).status_code == 401
    # Each instance still accepts tokens it has not seen.
    assert shared.hook(one).status_code == 200
    assert shared.hook(two).status_code == 200
    # Neither nginx nor an instance logs a token.
    logs = [shared.running.nginx.log_path, *(i.log_path for i in shared.running.instances)]
    for path in logs:
        text = path.read_text()
        assert token not in text and fresh not in text, path


def test_feedback_is_stored_once_whichever_instance_takes_it(shared):
    answer = shared.hook(shared.running.url)
    assert answer.status_code == 200
    card = answer.json()["cards"][0]["uuid"]

    def feedback_lines(log: list[re.Match]) -> list[re.Match]:
        return [m for m in log if m["path"].endswith("/feedback")]

    before = len(feedback_lines(access_log(shared.running)))
    first = shared.feedback(shared.running.url, card)
    assert first.status_code == 200 and first.json() == {"received": 1, "stored": 1}
    took = feedback_lines(logged(shared.running, lambda log: len(feedback_lines(log)) > before))
    took = took[before]
    other = 1 if took["upstream"] == shared.running.address(0) else 0
    again = shared.feedback(shared.running.instances[other].base_url, card)
    assert again.status_code == 200 and again.json() == {"received": 1, "stored": 0}
    through = shared.feedback(shared.running.url, card)
    assert through.status_code == 200 and through.json() == {"received": 1, "stored": 0}


def test_analytics_count_every_call_of_both_instances(shared):
    one, two = (i.base_url for i in shared.running.instances)
    for base in (one, two, shared.running.url, shared.running.url):
        assert shared.hook(base).status_code == 200
    card = next(iter(shared.card_rules))
    assert shared.feedback(two, card).status_code == 200
    both = {shared.running.address(0), shared.running.address(1)}
    log = logged(
        shared.running, lambda log: {m["upstream"] for m in log if m["method"] == "POST"} >= both
    )
    assert {m["upstream"] for m in log if m["method"] == "POST"} == both

    expected = {
        rule: (shared.fired[rule], shared.overridden[rule])
        for rule in set(RULE_IDS) | set(shared.fired)
    }
    # The audit rows are written a moment after each answer (one writer per process).
    deadline = time.monotonic() + 30
    while True:
        rows = shared.analytics()
        seen = {rule: (rows[rule]["fired"], rows[rule]["overridden"]) for rule in expected}
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == expected
    assert sum(f for f, _ in seen.values()) >= 4 * 3  # four calls, three causes each
