"""Faults of the shared stores, over HTTP against `cds-service serve` with CDS_DATABASE_URL and
CDS_REDIS_URL pointing through a TcpProxy that the tests cut and restore (a real PostgreSQL
database and a real Redis key prefix of their own, dropped after)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import EXAMPLE_NOW, load_scenario
from prometheus_client.parser import text_string_to_metric_families
from servers import (
    BIN,
    REDIS_TEST_URL,
    ServiceProcess,
    TcpProxy,
    free_port,
    postgres_database,
    redis_prefix,
    start_service,
    stop,
    url_through,
)

from cds_service.keys import make_key_pair, sign_token

ISS = "https://ehr.faults.example"
SERVICE = "cramp-sciatica-patient-view"


@dataclass
class Faulty:
    service: ServiceProcess
    pg: TcpProxy
    redis: TcpProxy
    database_url: str  # direct, for the test's own reads
    key_dir: Path
    kid: str

    def token(self, path: str) -> str:
        aud = f"{self.service.base_url}{path}"
        return sign_token(self.key_dir / "private-key.pem", kid=self.kid, iss=ISS, aud=aud)

    def post(self, path: str, body: dict) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(path)}"}
        return requests.post(self.service.base_url + path, json=body, headers=headers, timeout=30)

    def hook(self) -> requests.Response:
        request, _ = load_scenario("cramps-only")
        request["hookInstance"] = str(uuid.uuid4())
        return self.post(f"/cds-services/{SERVICE}", request)

    def feedback(self, card: str) -> requests.Response:
        item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00Z"}
        return self.post(f"/cds-services/{SERVICE}/feedback", {"feedback": [item]})

    def query(self, statement: str, **params) -> list[tuple]:
        engine = sa.create_engine(
            sa.make_url(self.database_url).set(drivername="postgresql+psycopg")
        )
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(sa.text(statement), params)]
        finally:
            engine.dispose()

    def health(self, path: str = "/health") -> requests.Response:
        return requests.get(self.service.base_url + path, timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name`'s series whose labels include `labels`, from a live /metrics."""
        text = requests.get(self.service.base_url + "/metrics", timeout=10).text
        wanted = set(labels.items())
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and wanted <= set(sample.labels.items())
        )


def migrate(url: str, workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cds-service"), "db", "upgrade"],
        env={**os.environ, "CDS_DATABASE_URL": url, "CDS_DATA_DIR": str(workdir / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("store-faults")
    with postgres_database() as url, redis_prefix() as prefix:
        assert migrate(url, workdir).returncode == 0
        parsed = sa.make_url(url)
        pg = TcpProxy(parsed.host, parsed.port)
        redis_url = sa.make_url(REDIS_TEST_URL)
        redis = TcpProxy(redis_url.host, redis_url.port or 6379)
        key_dir = workdir / "keys"
        kid = make_key_pair(key_dir, "ES384", "faults-1")
        trust = workdir / "trust.json"
        jwks = json.loads((key_dir / "jwks.json").read_text())
        trust.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": jwks}]}))
        port = free_port()
        env = {
            "CDS_TRUST_CONFIG": str(trust),
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "CDS_FIXED_NOW": EXAMPLE_NOW,
            "CDS_DATABASE_URL": url_through(url, pg),
            "CDS_REDIS_URL": url_through(REDIS_TEST_URL, redis),
            "CDS_REDIS_KEY_PREFIX": prefix,
        }
        service = start_service(workdir, env, workers=2, auth=True, port=port)
        try:
            yield Faulty(service, pg, redis, url, key_dir, kid)
        finally:
            stop(service.process)
            pg.cut()
            redis.cut()


def wait_for(check, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def assert_503_outcome(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"
    assert "Traceback" not in response.text


def test_with_postgresql_cut_hooks_answer_feedback_is_503_and_nothing_is_lost(faulty):
    before = faulty.query("SELECT count(*) FROM invocation")[0][0]
    errors_before = faulty.metric("cds_store_errors_total", store="feedback")
    assert faulty.health("/health/ready").status_code == 200
    faulty.pg.cut()
    try:
        cards = []
        for _ in range(6):
            response = faulty.hook()
            assert response.status_code == 200, response.text
            cards += [c["uuid"] for c in response.json()["cards"]]
        assert cards
        started = time.monotonic()
        refused = faulty.feedback(cards[0])
        assert time.monotonic() - started < 5  # a short connect timeout, never a hang
        assert_503_outcome(refused)
        assert int(refused.headers["Retry-After"]) > 0
        health = wait_for(lambda: (r := faulty.health()).json()["database"] == "unavailable" and r)
        assert health.status_code == 200  # liveness: this process serves
        assert wait_for(lambda: faulty.health().json()["spool"] == 6)
        # the operator's view: the spool gauge and the refused feedback's store error
        assert wait_for(lambda: faulty.metric("cds_audit_spool_depth") == 6)
        assert faulty.metric("cds_store_errors_total", store="feedback") == errors_before + 1
        # each worker asks at most once a second: within a second every one has noticed
        ready = wait_for(lambda: (r := faulty.health("/health/ready")).status_code == 503 and r)
        assert ready.status_code == 503
        assert ready.json()["database"] == "unavailable"
    finally:
        faulty.pg.restore()
    # the spool drains by itself: every call of the outage, once
    assert wait_for(lambda: faulty.query("SELECT count(*) FROM invocation")[0][0] == before + 6)
    time.sleep(1.5)  # and nothing more comes
    rows = faulty.query("SELECT count(*), count(DISTINCT event_id) FROM invocation")
    assert rows == [(before + 6, before + 6)]
    assert wait_for(lambda: faulty.health().json()["spool"] == 0)
    assert wait_for(lambda: faulty.metric("cds_audit_spool_depth") == 0)
    assert wait_for(lambda: faulty.health("/health/ready").status_code == 200)
    # the refused feedback, sent again, is stored once
    assert faulty.feedback(cards[0]).json() == {"received": 1, "stored": 1}
    assert faulty.feedback(cards[0]).json() == {"received": 1, "stored": 0}
    assert faulty.query("SELECT count(*) FROM feedback WHERE card_uuid = :c", c=cards[0]) == [(1,)]


def test_with_redis_cut_authenticated_calls_fail_closed_and_recover(faulty):
    assert faulty.hook().status_code == 200
    faulty.redis.cut()
    try:
        for _ in range(3):
            response = faulty.hook()
            assert_503_outcome(response)
        assert_503_outcome(faulty.feedback(str(uuid.uuid4())))
        ready = wait_for(lambda: (r := faulty.health("/health/ready")).status_code == 503 and r)
        assert ready.json()["redis"] == "unavailable"
        assert faulty.health().status_code == 200
    finally:
        faulty.redis.restore()
    assert wait_for(lambda: faulty.hook().status_code == 200, seconds=10)
    assert wait_for(lambda: faulty.health("/health/ready").status_code == 200)


def test_with_postgresql_black_holed_health_answers_at_once_and_ready_turns_503(faulty):
    """A server that accepts connections and never answers (dropped packets, a hung host): a
    probe's 2 s timeout must not see /health wait (it would restart every pod). Each worker
    asks in the background; /health answers from what it last found."""
    assert wait_for(lambda: faulty.health("/health/ready").status_code == 200)
    faulty.pg.black_hole()
    try:
        took = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # new connections each time: both workers answer
            for path in ("/health", "/health/ready"):
                started = time.monotonic()
                response = faulty.health(path)
                took.append(time.monotonic() - started)
                if path == "/health":
                    assert response.status_code == 200  # liveness: this process serves
            time.sleep(0.1)
        assert max(took) < 0.5, sorted(took)[-5:]
        # by now every worker has noticed (its question's deadline is 3 s)
        for _ in range(10):
            answer = faulty.health("/health/ready")
            assert answer.status_code == 503
            assert answer.json()["database"] == "unavailable"
            assert answer.json()["reason"] == "the database does not answer"
    finally:
        faulty.pg.restore()
    assert wait_for(lambda: faulty.health("/health/ready").status_code == 200, seconds=20)
    assert faulty.hook().status_code == 200


def serve(workdir: Path, url: str, hash_key: str | None = "5e" * 32) -> subprocess.Popen:
    env = {**os.environ, "CDS_DATABASE_URL": url, "CDS_DATA_DIR": str(workdir / "data")}
    env.pop("CDS_LOG_HASH_KEY", None)
    if hash_key:
        env["CDS_LOG_HASH_KEY"] = hash_key
    return subprocess.Popen(
        [str(BIN / "cds-service"), "serve", "--no-auth", "--port", str(free_port())],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def refusal(process: subprocess.Popen) -> str:
    """The one line `serve` ends with when it refuses to start (exit code 2, no traceback)."""
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("cds-service: ")
    return last


def test_serve_refuses_a_shared_database_without_a_patient_hash_key(tmp_path):
    """Each machine would otherwise make its own key, and the shared audit trail would know
    one patient under as many hashes as there are instances."""
    with postgres_database() as url:
        assert migrate(url, tmp_path).returncode == 0
        process = serve(tmp_path, url, hash_key=None)
        last = refusal(process)
        assert "CDS_LOG_HASH_KEY" in last


def test_serve_refuses_a_database_whose_schema_is_behind_until_db_upgrade(tmp_path):
    with postgres_database() as url:
        process = serve(tmp_path, url)
        last = refusal(process)
        assert "cds-service db upgrade" in last
        done = migrate(url, tmp_path)
        assert done.returncode == 0, done.stderr
        service = start_service(tmp_path, {"CDS_DATABASE_URL": url}, workers=1)
        try:
            assert requests.get(f"{service.base_url}/health", timeout=10).json()["database"] == "ok"
        finally:
            stop(service.process)


# ------------------------------------------------------------------ `cds-service analytics`


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cds-service"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_analytics_command_prints_the_rows_of_the_console_export(engine, tmp_path):
    import contextlib
    import csv
    import io

    with contextlib.ExitStack() as stack:
        env = {"CDS_DATA_DIR": str(tmp_path / "data"), "CDS_FIXED_NOW": EXAMPLE_NOW}
        if engine == "postgresql":
            env["CDS_DATABASE_URL"] = stack.enter_context(postgres_database())
            assert cli(["db", "upgrade"], env).returncode == 0
        service = start_service(tmp_path, env, workers=2)
        stack.callback(stop, service.process)
        cards = []
        for name in ("cramps-only", "association-both-features", "cramps-only"):
            request, expected = load_scenario(name)
            request["hookInstance"] = str(uuid.uuid4())
            url = f"{service.base_url}/cds-services/{expected['service']}"
            answer = requests.post(url, json=request, timeout=30)
            assert answer.status_code == 200
            cards += [(expected["service"], c["uuid"]) for c in answer.json()["cards"]]
        for n, (service_id, card) in enumerate(cards):
            outcome = {"card": card, "outcome": "overridden"}
            outcome["outcomeTimestamp"] = "2026-11-20T12:05:00Z"
            if n % 2:
                reason = {"system": "https://crampcds.dev/fhir/CodeSystem/override-reason"}
                reason["code"] = "already-addressed"
                outcome["overrideReason"] = {"reason": reason}
            url = f"{service.base_url}/cds-services/{service_id}/feedback"
            assert requests.post(url, json=outcome, timeout=30).status_code == 200
        today = time.strftime("%Y-%m-%d", time.gmtime())
        period = {"from": today, "to": today}

        def export() -> list[dict]:
            exported = requests.get(
                f"{service.base_url}/console/analytics.csv", params=period, timeout=30
            )
            assert exported.status_code == 200
            return list(csv.DictReader(io.StringIO(exported.text)))

        # the workers' audit writers batch every 0.2 s: wait until every card is on record
        console = wait_for(
            lambda: (rows := export()) and sum(int(r["fired"]) for r in rows) == len(cards) and rows
        )
        done = cli(["analytics", "--from", today, "--to", today, "--json"], env)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        columns = ("rule_id", "fired", "fired_critical", "fired_warning", "fired_info")
        columns += ("accepted", "overridden")
        assert [[str(row[c]) for c in columns] for row in printed] == [
            [row[c] for c in columns] for row in console
        ]
        assert sum(row["fired"] for row in printed) == len(cards)
        assert sum(row["overridden"] for row in printed) == len(cards)
        reasons = [r for row in printed for r in row["override_reasons"]]
        assert {r["code"] for r in reasons} == {"already-addressed", None}
        assert sum(r["count"] for r in reasons) == len(cards)
        table = cli(["analytics", "--from", today, "--to", today], env)
        assert table.returncode == 0 and "cramp-labs-missing" in table.stdout


@pytest.mark.parametrize(
    "dates",
    [
        ["--from", "2026-11-31", "--to", "2026-12-01"],
        ["--from", "2026-12-02", "--to", "2026-12-01"],
    ],
)
def test_the_analytics_command_refuses_bad_dates_in_one_line(dates, tmp_path):
    done = cli(["analytics", *dates, "--json"], {"CDS_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("cds-service: --from and --to must be dates")
    assert done.stdout == ""


# ------------------------------------------------------ a database back at an older schema


def test_a_database_back_behind_this_version_is_not_ready_and_hooks_still_answer(tmp_path):
    """Down when `serve` checked it, back at an older revision: hook calls answer with every
    card (never a 500), /health/ready is 503 naming `cds-service db upgrade`, the audit rows
    wait in the spool, and after the upgrade they are all stored, once."""
    with postgres_database() as url:
        parsed = sa.make_url(url)
        proxy = TcpProxy(parsed.host, parsed.port)
        proxy.cut()
        env = {"CDS_DATABASE_URL": url_through(url, proxy), "CDS_FIXED_NOW": EXAMPLE_NOW}
        service = start_service(tmp_path, env, workers=1)
        try:
            engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"))
            try:
                from cds_service.stores import migrate as migrations

                migrations._upgrade(engine, "audit_0001")  # no event ids, digests or quiet
                migrations._upgrade(engine, "feedback@head")
            finally:
                engine.dispose()
            proxy.restore()
            base = service.base_url

            def ready() -> requests.Response:
                return requests.get(f"{base}/health/ready", timeout=10)

            behind = wait_for(lambda: (r := ready()).json()["database"] == "behind" and r)
            assert behind.status_code == 503
            assert "cds-service db upgrade" in behind.json()["reason"]
            request, _ = load_scenario("cramps-only")
            for _ in range(4):
                request["hookInstance"] = str(uuid.uuid4())
                answer = requests.post(f"{base}/cds-services/{SERVICE}", json=request, timeout=30)
                assert answer.status_code == 200, answer.text
                assert answer.json()["cards"]
            metrics_text = requests.get(f"{base}/metrics", timeout=10).text
            errors = {
                sample.labels["store"]: sample.value
                for family in text_string_to_metric_families(metrics_text)
                for sample in family.samples
                if sample.name == "cds_store_errors_total"
            }
            assert errors["quiet"] >= 1 and errors.get("other", 0) == 0
            lines = [json.loads(x) for x in service.log_text().splitlines() if x.startswith("{")]
            [said] = [x for x in lines if x.get("event") == "database_schema_behind"]
            assert "run `cds-service db upgrade`" in said["error"]
            assert "Traceback" not in service.log_text()
            assert wait_for(lambda: requests.get(f"{base}/health", timeout=10).json()["spool"])
            done = migrate(url, tmp_path)
            assert done.returncode == 0, done.stderr
            assert wait_for(lambda: ready().status_code == 200)

            def stored() -> list[tuple]:
                engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"))
                try:
                    with engine.connect() as connection:
                        statement = "SELECT count(*), count(DISTINCT event_id) FROM invocation"
                        return [tuple(r) for r in connection.execute(sa.text(statement))]
                finally:
                    engine.dispose()

            assert wait_for(lambda: stored() == [(4, 4)])
        finally:
            stop(service.process)
            proxy.cut()


# ------------------------------------------------- the CLI with a database that does not answer


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade"],
        ["db", "current"],
        ["analytics", "--from", "2026-11-01", "--to", "2026-11-30", "--json"],
        ["quiet", "list"],
    ],
)
def test_a_database_that_does_not_answer_is_one_line_without_its_password(command, tmp_path):
    url = f"postgresql://cds:hunter2-secret@127.0.0.1:{free_port()}/cds"  # nothing listens
    env = {"CDS_DATABASE_URL": url, "CDS_DATA_DIR": str(tmp_path), "CDS_LOG_HASH_KEY": "ab" * 32}
    done = cli(command, env)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("cds-service: the database postgresql://cds:***@127.0.0.1:")
    assert "not available" in line
    assert "hunter2" not in done.stderr + done.stdout
    assert done.stdout == ""
