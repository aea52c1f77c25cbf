"""Several instances behind a real nginx running deploy/nginx.conf (tests/cluster.py).

- An instance killed with SIGKILL under load: the other keeps serving, only the POSTs in flight
  on the killed one fail (502 from nginx, an OperationOutcome), every call sent after it died
  succeeds, and a GET in flight is retried on the other instance.
- nginx refuses a body over the service's limit itself, with an OperationOutcome; one of
  exactly the limit goes through.
- /metrics is never served through nginx (every request reaches the instances from 127.0.0.1,
  which they let read it), while each instance answers it directly on loopback.
- With CDS_DATABASE_URL and CDS_REDIS_URL shared by both instances (a fresh PostgreSQL database
  migrated with `cds-service db upgrade`, a Redis key prefix of its own), reached through a
  TcpProxy per server that the tests cut and restore, authentication on: a token used on one
  instance is refused on the other, directly and through nginx; feedback is stored once
  whichever instance takes it; `cds-service analytics --json` counts every call of both.
  PostgreSQL cut: hook calls through nginx still answer with cards on both instances, feedback
  gets the service's 503 (never retried, never nginx's 502), and once restored both spools
  drain: every call audited exactly once; the deployment's preStop hook waits meanwhile. Redis
  cut: authenticated calls through nginx answer 503 on both instances, then 200 by themselves.
  Without PostgreSQL or Redis these skip, except under CI, where they fail (and without nginx,
  which tests/cluster.py installs, they fail).
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
import sqlalchemy as sa
from cluster import Cluster, cluster, start_prestop
from conftest import EXAMPLE_NOW, load_scenario
from cryptography.hazmat.primitives.asymmetric import ec
from servers import (
    BIN,
    REDIS_TEST_URL,
    TcpProxy,
    free_port,
    postgres_database,
    redis_prefix,
    url_through,
)

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


def wait_for(check: Callable[[], object], seconds: float = 15.0):
    """`check()` once it is truthy, or its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def assert_503_outcome(response: requests.Response) -> None:
    """The service's own answer when a shared server does not answer, passed on by nginx."""
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"
    assert int(response.headers["Retry-After"]) > 0


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

    def answered(log: list[re.Match]) -> set[str]:  # (a 413 of another test has upstream -)
        return {m["upstream"] for m in log if m["method"] == "POST" and m["status"] == "200"}

    log = logged(pair, lambda log: answered(log) >= both)
    assert answered(log) == both
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


def test_metrics_are_never_served_through_nginx(pair):
    """nginx runs on the instances' host here, as in many deployments: every request reaches
    them from 127.0.0.1, which CDS_METRICS_ALLOW lets in by default. nginx answers /metrics
    itself (404, an OperationOutcome, as for an unknown path), under whatever spelling of the
    path it normalises to /metrics; the instances still answer it directly on loopback."""
    for path in ("/metrics", "/metrics?name[]=cds_cards_total", "//metrics", "/%6Detrics"):
        answer = requests.get(f"{pair.url}{path}", timeout=10)
        assert answer.status_code == 404, path
        assert answer.headers["Content-Type"].startswith("application/json"), path
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome", path
        assert outcome["issue"][0]["code"] == "not-found", path
        assert "cds_" not in answer.text, path
    assert requests.head(f"{pair.url}/metrics", timeout=10).status_code == 404
    log = logged(pair, lambda log: sum(m["path"] == "/metrics" for m in log) >= 5)
    scraped = [m for m in log if m["path"] == "/metrics"]
    assert len(scraped) >= 5 and all(m["upstream"] == "-" for m in scraped)
    for instance in pair.instances:
        direct = requests.get(f"{instance.base_url}/metrics", timeout=10)
        assert direct.status_code == 200
        assert "cds_http_requests_total" in direct.text


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


NGINX_SEES_CLOSE_S = 0.05


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
    after = [c for c in posts if c.started > dead + NGINX_SEES_CLOSE_S]
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
    # "In flight" includes a call nginx sent on a kept-alive connection to the killed instance
    # in the few milliseconds before it read that connection's close: such a POST was sent, so
    # nginx may not retry it (seen once: started 1.5 ms after the last process was gone).
    for call in failed:
        assert call.started < dead + NGINX_SEES_CLOSE_S and call.ended >= killing, call
        if call.status is None:
            assert call.body == "ChunkedEncodingError", call
        else:
            assert call.status == 502, call
            assert json.loads(call.body)["resourceType"] == "OperationOutcome"
    assert len(failed) <= POST_THREADS
    # Everything sent after it died (and nginx saw it die) was answered, GETs too; a GET fails
    # only when it was in flight on the killed instance and its answer was already on its way
    # (seen once in about 30 runs; a GET nginx could not send is retried on the survivor).
    assert all(c.status == 200 for c in after)
    assert gets and all(c.status == 200 for c in gets if c.started > dead + NGINX_SEES_CLOSE_S)
    assert all(
        c.started < dead + NGINX_SEES_CLOSE_S and c.ended >= killing
        for c in gets
        if c.status != 200
    )
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
    env: dict[str, str]  # direct URLs, for the CLI and the test's own reads
    key: ec.EllipticCurvePrivateKey
    pg: TcpProxy  # between the instances and PostgreSQL
    redis: TcpProxy  # between the instances and Redis
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

    def hook(
        self, base_url: str, token: str | None = None, hook_instance: str | None = None
    ) -> requests.Response:
        path = f"/cds-services/{SERVICE}"
        request, _ = load_scenario("mixed-three-causes")
        request["hookInstance"] = hook_instance or str(uuid.uuid4())
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

    def query(self, statement: str, **params) -> list[tuple]:
        """Rows read from the shared database directly (not through the proxy)."""
        url = sa.make_url(self.env["CDS_DATABASE_URL"]).set(drivername="postgresql+psycopg")
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(sa.text(statement), params)]
        finally:
            engine.dispose()

    def settled(self) -> bool:
        """Whether every call made so far is written to PostgreSQL: a marker call on each
        instance (one worker each: its audit writer takes rows in order) is stored."""
        markers = [str(uuid.uuid4()) for _ in self.running.instances]
        for instance, marker in zip(self.running.instances, markers, strict=True):
            assert self.hook(instance.base_url, hook_instance=marker).status_code == 200
        count = "SELECT count(*) FROM invocation WHERE hook_instance = ANY(:m)"
        return bool(wait_for(lambda: self.query(count, m=markers) == [(len(markers),)]))

    def spools(self) -> list[int]:
        """Each instance's audit rows waiting for the database (/health, on the instance)."""
        return [
            requests.get(f"{i.base_url}/health", timeout=10).json()["spool"]
            for i in self.running.instances
        ]


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
        # The instances reach both servers through a proxy each, which the fault tests cut.
        database, cache = sa.make_url(database_url), sa.make_url(REDIS_TEST_URL)
        pg = TcpProxy(database.host, database.port or 5432)
        redis = TcpProxy(cache.host, cache.port or 6379)
        instance_env = {k: v for k, v in env.items() if k != "CDS_DATA_DIR"}
        instance_env["CDS_DATABASE_URL"] = url_through(database_url, pg)
        instance_env["CDS_REDIS_URL"] = url_through(REDIS_TEST_URL, redis)
        # Both instances hash patients with one key (start_service derives it from the
        # database name, which the proxied URL keeps).
        try:
            with cluster(
                workdir, count=2, env=instance_env, workers=1, auth=True, nginx_port=nginx_port
            ) as running:
                yield Shared(running, env, key, pg, redis)
        finally:
            pg.cut()
            redis.cut()


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


def test_postgresql_cut_behind_nginx_loses_no_audit_row_and_feedback_waits(shared):
    """PostgreSQL unreachable from both instances: hook calls through nginx answer with cards
    on both, their audit rows spool on each; feedback through nginx gets the service's 503
    (passed on once, never retried, never nginx's 502). The deployment's preStop hook holds
    while a spool has rows. Restored: both spools drain by themselves, every call of the outage
    is in PostgreSQL exactly once with the cards it showed, and the refused feedback, sent
    again, is stored once."""
    running = shared.running

    def refused_feedback(log: list[re.Match]) -> list[re.Match]:
        return [m for m in log if m["path"].endswith("/feedback") and m["status"] == "503"]

    # Nothing of earlier calls is left to spool: the spools will hold this test's rows only.
    assert shared.settled()
    assert wait_for(lambda: shared.spools() == [0, 0])
    before = len(refused_feedback(logged(running, lambda log: True)))
    calls = 8
    sent: list[str] = []  # hookInstance of each call made during the outage
    shown: list[str] = []  # the uuids of the cards they answered
    prestop = None
    try:
        shared.pg.cut()
        try:
            for _ in range(calls):
                sent.append(str(uuid.uuid4()))
                answer = shared.hook(running.url, hook_instance=sent[-1])
                assert answer.status_code == 200, answer.text
                assert answer.json()["cards"]
                shown += [card["uuid"] for card in answer.json()["cards"]]
            # Both instances served: each spooled its own calls' rows.
            wait_for(lambda: sum(shared.spools()) == calls)
            spools = shared.spools()
            assert sum(spools) == calls and min(spools) > 0, spools

            assert_503_outcome(shared.feedback(running.url, shown[0]))
            log = logged(running, lambda log: len(refused_feedback(log)) > before)
            (line,) = refused_feedback(log)[before:]
            assert line["us"] == "503"  # the instance's answer, passed on as it was
            assert line["upstream"] in {running.address(0), running.address(1)}  # one try

            # A pod deleted now would lose its spool with its emptyDir: its preStop hook waits.
            prestop = start_prestop(f"{running.instances[0].base_url}/health", wait_s=60)
            time.sleep(2)
            assert prestop.poll() is None, prestop.communicate()
        finally:
            shared.pg.restore()
        # Restored: the hook ends once the instance's spool is written (long before 60 s).
        _, stderr = prestop.communicate(timeout=30)
        assert prestop.returncode == 0 and stderr == ""
        assert shared.spools()[0] == 0
    finally:
        if prestop is not None and prestop.poll() is None:
            prestop.kill()
            prestop.wait()
    assert wait_for(lambda: shared.spools() == [0, 0])
    stored = shared.query(
        "SELECT hook_instance, count(*) FROM invocation WHERE hook_instance = ANY(:sent) "
        "GROUP BY hook_instance",
        sent=sent,
    )
    assert dict(stored) == {hook_instance: 1 for hook_instance in sent}  # none lost, none twice
    cards = shared.query(
        "SELECT c.card_uuid FROM card c JOIN invocation i ON i.id = c.invocation_id "
        "WHERE i.hook_instance = ANY(:sent)",
        sent=sent,
    )
    assert sorted(card for (card,) in cards) == sorted(shown)
    # The refused feedback, sent again through nginx, is stored once.
    again = shared.feedback(running.url, shown[0])
    assert again.status_code == 200 and again.json() == {"received": 1, "stored": 1}
    assert shared.feedback(running.url, shown[0]).json() == {"received": 1, "stored": 0}
    assert shared.query("SELECT count(*) FROM feedback WHERE card_uuid = :c", c=shown[0]) == [(1,)]


def test_redis_cut_behind_nginx_fails_closed_and_recovers_by_itself(shared):
    """Redis unreachable from both instances: a replay cannot be ruled out, so authenticated
    calls through nginx answer the service's 503 OperationOutcome on both instances (never
    200, never 500, never nginx's 502); restored, they answer 200 again without a restart."""
    running = shared.running
    assert shared.hook(running.url).status_code == 200

    def refusals(log: list[re.Match]) -> list[re.Match]:
        return [m for m in log if m["status"] == "503" and not m["path"].endswith("/feedback")]

    before = len(refusals(logged(running, lambda log: True)))
    calls = 6
    shared.redis.cut()
    try:
        for _ in range(calls):
            assert_503_outcome(shared.hook(running.url))
        assert_503_outcome(shared.feedback(running.url, str(uuid.uuid4())))
        log = logged(running, lambda log: len(refusals(log)) >= before + calls)
    finally:
        shared.redis.restore()
    refused = refusals(log)[before:]
    assert len(refused) == calls
    assert all(m["us"] == "503" for m in refused)  # each passed on once, as the instance said
    assert {m["upstream"] for m in refused} == {running.address(0), running.address(1)}
    assert not [m for m in log if m["status"] in ("500", "502")]
    # Back by themselves: through nginx, and on each instance.
    assert wait_for(lambda: shared.hook(running.url).status_code == 200, seconds=10)
    for instance in running.instances:
        assert wait_for(lambda i=instance: shared.hook(i.base_url).status_code == 200)
