"""The store contract (cds_service.stores), run over both engines with the same test functions:
the embedded SQLite files and a real PostgreSQL database (each test its own, dropped after),
the embedded replay file and a real Redis (each test its own key prefix)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from servers import (
    REDIS_TEST_URL,
    TcpProxy,
    postgres_database,
    redis_prefix,
    store_settings,
    url_through,
)

from cds_service.errors import ConfigurationError, StoreUnavailable
from cds_service.settings import Settings
from cds_service.stores import migrate, open_stores, schema

PV = "cramp-sciatica-patient-view"
ENGINES = ["sqlite", "postgresql"]


def item(card: str, outcome: str = "overridden", **extra) -> dict:
    return {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-20T12:05:00Z", **extra}


def entry(**extra) -> dict:
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "service_id": PV,
        "hook": "patient-view",
        "status": 200,
        "ms": 3.5,
        "patient": "0123456789abcdef0123",
        "rule_ids": ["quinine-caution"],
        **extra,
    }


@pytest.fixture(params=ENGINES)
def settings(request, tmp_path):
    with store_settings(request.param, tmp_path) as configured:
        yield configured


@pytest.fixture
def stores(settings):
    opened = open_stores(settings, replay=False, writer=False)
    yield opened
    opened.close()


# ---------------------------------------------------------------------------------- feedback


def test_feedback_is_stored_once_however_often_it_is_sent(stores):
    card = str(uuid.uuid4())
    first = [item(card), item(card, "accepted", acceptedSuggestions=[{"id": "s1"}])]
    assert stores.feedback.add(PV, first) == 2
    # the same outcomes again, one spelt differently (prefix, case, timestamp form), one new
    again = [
        item(f"urn:uuid:{card.upper()}", outcomeTimestamp="2026-11-20T12:05:00.000+00:00"),
        item(card, "accepted", acceptedSuggestions=[{"id": "s2"}]),
    ]
    assert stores.feedback.add(PV, again) == 1
    assert stores.feedback.add(PV, again + again) == 0  # duplicates within one batch too
    rows = stores.feedback.all()
    assert len(rows) == 3
    assert {r["card_uuid"] for r in rows} == {card}
    assert {r["outcome_timestamp"] for r in rows} == {"2026-11-20T12:05:00Z"}


def test_two_store_objects_share_the_feedback(settings):
    """Two processes (or instances) each open their own stores: one outcome is stored once."""
    first = open_stores(settings, replay=False, writer=False)
    second = open_stores(settings, replay=False, writer=False)
    try:
        card = str(uuid.uuid4())
        assert first.feedback.add(PV, [item(card)]) == 1
        assert second.feedback.add(PV, [item(card)]) == 0
        assert len(second.feedback.all()) == 1
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------------------------- audit


def test_audit_rows_and_their_cards_are_written_once_each(stores):
    cards = [(str(uuid.uuid4()), "quinine-caution", "warning")]
    stores.audit.record(entry(hook_instance="h1"), cards)
    stores.audit.record(entry(hook_instance="h2"), [])
    stores.audit.flush()
    stores.audit.flush()  # nothing queued: nothing written again
    rows = stores.audit.invocations()
    assert [r["hook_instance"] for r in rows] == ["h1", "h2"]
    assert len({r["event_id"] for r in rows}) == 2
    assert json.loads(rows[0]["rule_ids"]) == ["quinine-caution"]
    assert stores.audit.spool_depth() == 0


def test_a_spool_file_drained_twice_is_stored_once(stores, settings):
    """A crash between writing a drained file's rows and deleting the file leaves it behind;
    the next drain writes its rows again, and each is stored once (its event id)."""
    stores.audit.record(entry(hook_instance="once"), [(str(uuid.uuid4()), "r", "info")])
    with stores.audit._io:
        rows = stores.audit._queue[:]
    spool_dir = settings.data_dir / "spool" / "audit"
    spool_dir.mkdir(parents=True)
    left_behind = "\n".join(json.dumps(r) for r in rows) + "\n"
    stores.audit.flush()
    (spool_dir / "99999-left-behind.jsonl").write_text(left_behind)
    assert stores.audit.spool_depth() == 1
    stores.audit.flush()
    assert stores.audit.spool_depth() == 0
    assert [r["hook_instance"] for r in stores.audit.invocations()] == ["once"]


def spooled_rows(stores, count: int, prefix: str) -> str:
    """`count` audit rows as a spool file holds them (JSON lines), recorded and taken back out
    of the queue."""
    for n in range(count):
        card = (str(uuid.uuid4()), "r", "info")
        stores.audit.record(entry(hook_instance=f"{prefix}-{n}"), [card])
    with stores.audit._lock:
        rows, stores.audit._queue = stores.audit._queue, []
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_feedback_writes_the_queued_rows_and_leaves_the_spool_to_the_writer(stores, settings):
    """A feedback call finds the card it quiets by writing this process's queued audit rows;
    it must not drain a backlog the spool holds after an outage (the request would wait on
    all of it): that is the audit writer's."""
    from cds_service.quiet import Quieting

    spool_dir = settings.data_dir / "spool" / "audit"
    spool_dir.mkdir(parents=True)
    (spool_dir / "99999-left-behind.jsonl").write_text(spooled_rows(stores, 3, "outage"))
    card = str(uuid.uuid5(uuid.NAMESPACE_URL, f"card-{uuid.uuid4()}"))
    stores.audit.record(entry(), [(card, "cramp-labs-missing", "info", "digest-1", False)])
    quieting = Quieting(stores.quiet, lambda text: text)
    reason = {"system": "https://crampcds.dev/fhir/CodeSystem/override-reason"}
    feedback = [item(card, overrideReason={"reason": {**reason, "code": "already-addressed"}})]
    today = datetime.now(UTC).date()
    assert quieting.on_feedback(feedback, today, stores.audit.write_queued) == 1
    [quiet] = stores.quiet.entries(active_on=today)
    assert (quiet.card_uuid, quiet.rule_id, quiet.patient_hash) == (
        card,
        "cramp-labs-missing",
        entry()["patient"],
    )
    assert stores.audit.spool_depth() == 3  # the backlog is left alone
    stores.audit.flush()  # the writer's turn
    assert stores.audit.spool_depth() == 0
    assert len(stores.audit.invocations()) == 4


def read_bytes_during(call) -> int:
    """Bytes this process read (read(2), pread(2)) while `call` ran (Linux /proc)."""

    def rchar() -> int:
        text = Path("/proc/self/io").read_text()
        return int(next(line for line in text.splitlines() if line.startswith("rchar:"))[7:])

    before = rchar()
    call()
    return rchar() - before


def test_the_spool_depth_reads_only_what_was_added_since_it_last_counted(tmp_path):
    """`depth()` runs every 0.2 s in every worker and for /health: a spool of millions of
    rows after a long outage must not be read again each time."""
    from cds_service.stores.spool import Spool

    spool = Spool(tmp_path)
    row = json.dumps({"event_id": "x" * 32, "pad": "p" * 200}) + "\n"
    other = tmp_path / "4242-another-process.jsonl"
    other.write_text(row * 20_000)  # about 4.7 MB, of a process still running
    spool.append([{"event_id": "own"}] * 5)  # this process's own file
    assert spool.depth() == 20_005
    assert read_bytes_during(spool.depth) < 64 * 1024  # nothing new: not read again
    with other.open("a") as grown:
        grown.write(row * 3)
    spool.append([{"event_id": "own"}] * 2)
    assert read_bytes_during(spool.depth) < 64 * 1024
    assert spool.depth() == 20_010
    other.unlink()
    other.write_text(row)  # another file of the same name: counted afresh
    assert spool.depth() == 8
    spool.close()


def test_a_large_spool_file_is_drained_in_chunks_never_held_whole(tmp_path):
    """20,000 rows (about 9 MB of JSON) drained once each, with a line cut short by a crash
    skipped; the drain holds a chunk of rows, not the file."""
    import tracemalloc

    stores = open_stores(Settings(data_dir=tmp_path), replay=False, writer=False)
    try:
        lines = spooled_rows(stores, 20_000, "big")
        spool_dir = tmp_path / "spool" / "audit"
        spool_dir.mkdir(parents=True)
        (spool_dir / "99999-left-behind.jsonl").write_text(lines + '{"event_id": "cut sho')
        assert stores.audit.spool_depth() == 20_000
        tracemalloc.start()
        try:
            stores.audit.flush()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stores.audit.spool_depth() == 0
        # Measured: 5.4 MB at most while draining this 8.3 MB file; 59 MB when it was read
        # whole and parsed into rows at once.
        assert peak < len(lines), peak
        with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
            counted = db.execute("SELECT count(*), count(DISTINCT event_id) FROM invocation")
            assert counted.fetchone() == (20_000, 20_000)
            assert db.execute("SELECT count(*) FROM card").fetchone() == (20_000,)
    finally:
        stores.close()


# ---------------------------------------------------------------- audit spool (PostgreSQL)


@pytest.fixture
def pg_through_proxy(tmp_path):
    """Settings whose database URL goes through a TcpProxy the test can cut."""
    with postgres_database() as url:
        direct = Settings(data_dir=tmp_path, database_url=url)
        migrate.upgrade(direct)
        host_port = sa.make_url(url)
        proxy = TcpProxy(host_port.host, host_port.port)
        try:
            yield Settings(data_dir=tmp_path, database_url=url_through(url, proxy)), proxy, direct
        finally:
            proxy.cut()


def count_invocations(direct: Settings) -> list[str]:
    engine = sa.create_engine(sa.make_url(direct.database_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            return [r[0] for r in connection.execute(sa.text("SELECT event_id FROM invocation"))]
    finally:
        engine.dispose()


def test_audit_rows_spool_while_the_database_is_cut_and_drain_once_it_is_back(pg_through_proxy):
    settings, proxy, direct = pg_through_proxy
    stores = open_stores(settings, replay=False, writer=False)
    try:
        for n in range(5):
            stores.audit.record(entry(hook_instance=f"before-{n}"), [])
        stores.audit.flush()
        proxy.cut()
        for n in range(7):
            stores.audit.record(entry(hook_instance=f"during-{n}"), [(f"c{n}", "r", "info")])
        stores.audit.flush()
        assert stores.audit.spool_depth() == 7
        assert stores.audit.errors >= 1
        with pytest.raises(StoreUnavailable):
            stores.feedback.add(PV, [item(str(uuid.uuid4()))])
        assert stores.health()["database"] == "unavailable"
        proxy.restore()
        stores.audit.flush()
        assert stores.audit.spool_depth() == 0
        ids = count_invocations(direct)
        assert len(ids) == 12 and len(set(ids)) == 12  # none lost, none twice
        [cards] = [r for r in stores.audit.invocations() if r["hook_instance"] == "during-3"]
    finally:
        stores.close()
    assert cards["status"] == 200


SPOOL_AND_WAIT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from cds_service.settings import Settings
from cds_service.stores import open_stores
stores = open_stores(Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2]), replay=False,
                     writer=False)
for n in range(int(sys.argv[3])):
    stores.audit.record({"time": datetime.now(UTC).isoformat(), "status": 200, "ms": 1.0,
                         "hook_instance": f"child-{n}"}, [])
stores.audit.flush()
print(stores.audit.spool_depth(), flush=True)
sys.stdin.readline()  # hold the spool file (and its lock) until told
"""


def test_a_spool_left_by_an_ended_process_is_drained_by_the_next_once(pg_through_proxy):
    """A process spools while the database is cut and lives on: another process does not
    take its file. It is killed (a crash, a restart): the next process drains its rows,
    exactly once."""
    settings, proxy, direct = pg_through_proxy
    proxy.cut()
    child = subprocess.Popen(
        [sys.executable, "-c", SPOOL_AND_WAIT, str(settings.data_dir), settings.database_url, "9"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "9"
        proxy.restore()
        stores = open_stores(settings, replay=False, writer=False)
        try:
            stores.audit.flush()
            assert count_invocations(direct) == []  # the living child's file is its own
            assert stores.audit.spool_depth() == 9
            child.kill()  # no exit handler runs: its file is left behind, unlocked
            child.wait(30)
            stores.audit.flush()
            assert stores.audit.spool_depth() == 0
            stores.audit.flush()
            ids = count_invocations(direct)
            assert len(ids) == 9 and len(set(ids)) == 9
        finally:
            stores.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


# ------------------------------------------------------------------------------------ replay


@pytest.fixture(params=["sqlite", "redis"])
def replay_settings(request, tmp_path):
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
        return
    with redis_prefix() as prefix:
        yield Settings(data_dir=tmp_path, redis_url=REDIS_TEST_URL, redis_key_prefix=prefix)


def test_a_token_id_is_accepted_once_across_two_store_objects(replay_settings):
    one = open_stores(replay_settings, writer=False)
    two = open_stores(replay_settings, writer=False)
    try:
        exp = time.time() + 60
        assert one.replay.first_use("iss-a", "jti-1", exp) is True
        assert two.replay.first_use("iss-a", "jti-1", exp) is False
        assert one.replay.first_use("iss-a", "jti-1", exp) is False
        assert two.replay.first_use("iss-b", "jti-1", exp) is True  # another issuer's id
    finally:
        one.close()
        two.close()


def test_an_id_is_free_again_once_its_time_has_passed(replay_settings):
    stores = open_stores(replay_settings, writer=False)
    try:
        assert stores.replay.first_use("iss", "short", time.time() + 0.3) is True
        assert stores.replay.first_use("iss", "short", time.time() + 60) is False  # just inside
        time.sleep(0.5)
        assert stores.replay.first_use("iss", "short", time.time() + 60) is True  # just outside
    finally:
        stores.close()


FIRST_USE = """
import sys, time
from pathlib import Path
from cds_service.settings import Settings
from cds_service.stores import open_stores
settings = Settings(data_dir=Path(sys.argv[1]), redis_url=sys.argv[2] or None,
                    redis_key_prefix=sys.argv[3])
print(open_stores(settings, writer=False).replay.first_use("iss", sys.argv[4], time.time() + 60))
"""


def test_a_token_id_used_in_one_process_is_refused_in_another(replay_settings):
    jti = uuid.uuid4().hex
    args = [
        str(replay_settings.data_dir),
        replay_settings.redis_url or "",
        replay_settings.redis_key_prefix,
        jti,
    ]
    answers = [
        subprocess.run(
            [sys.executable, "-c", FIRST_USE, *args], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        for _ in range(2)
    ]
    assert answers == ["True", "False"]


def test_redis_that_does_not_answer_is_store_unavailable_within_a_second(tmp_path):
    proxy = TcpProxy("127.0.0.1", 9)  # nothing to forward to: connections are dropped
    proxy.cut()
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    stores = open_stores(settings, writer=False)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            stores.replay.first_use("iss", "jti", time.time() + 60)
        assert time.monotonic() - started < 1.5
        assert refused.value.status == 503
        assert stores.health()["redis"] == "unavailable"
    finally:
        stores.close()


# -------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CDS_DATABASE_URL", "mysql://u@h:3306/db"),
        ("CDS_DATABASE_URL", "postgresql://user:s3cret@host:99999/db"),
        ("CDS_DATABASE_URL", "postgresql://user:s3cret@host:5432"),
        ("CDS_DATABASE_URL", "not a url s3cret"),
        ("CDS_REDIS_URL", "redis://:s3cret@host:6379/zero"),
        ("CDS_REDIS_URL", "http://host:6379/0"),
    ],
)
def test_a_malformed_server_url_names_its_variable_and_never_its_password(name, value):
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    assert name in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CDS_DATABASE_URL", "postgresql://user:s3cret@db.example:5432/cds"),
        ("CDS_DATABASE_URL", "postgres://db/cds"),
        ("CDS_REDIS_URL", "redis://:s3cret@cache:6379/2"),
        ("CDS_REDIS_URL", "rediss://cache"),
    ],
)
def test_well_formed_server_urls_are_taken_and_kept_out_of_the_settings_repr(name, value):
    settings = Settings.from_env({name: value})
    assert value in (settings.database_url, settings.redis_url)
    assert "s3cret" not in repr(settings)


# ------------------------------------------------------------------------------ migrations


def test_the_migrations_build_exactly_the_tables_the_stores_use(settings):
    """Alembic's comparison of the migrated database with schema.py finds nothing to change."""
    urls = (
        [settings.database_url]
        if settings.database_url
        else [f"sqlite:///{settings.feedback_db_path}", f"sqlite:///{settings.audit_db_path}"]
    )
    if not settings.database_url:
        migrate.upgrade(settings)
    for url in urls:
        parsed = sa.make_url(url)
        if parsed.drivername.startswith("postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection)
                tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
                metadata = sa.MetaData()
                for source in (schema.feedback_metadata, schema.audit_metadata):
                    for table in source.tables.values():
                        if table.name in tables:
                            table.to_metadata(metadata)
                assert tables, url
                assert compare_metadata(context, metadata) == []
        finally:
            engine.dispose()


TODAYS_FILES = {
    "feedback.sqlite3": """
CREATE TABLE feedback (key TEXT PRIMARY KEY, service_id TEXT NOT NULL, card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL, accepted_suggestions TEXT,
    override_reason_system TEXT, override_reason_code TEXT, received_at TEXT NOT NULL);
CREATE INDEX feedback_card ON feedback (card_uuid);
INSERT INTO feedback VALUES ('k1', 'svc', 'card-1', 'accepted', '2026-01-01', NULL, NULL, NULL,
    '2026-01-02T00:00:00+00:00');
""",
    "audit.sqlite3": """
CREATE TABLE invocation (id INTEGER PRIMARY KEY, time TEXT NOT NULL, service_id TEXT, hook TEXT,
    hook_instance TEXT, issuer TEXT, tenant TEXT, status INTEGER NOT NULL,
    latency_ms REAL NOT NULL, patient_hash TEXT, rule_ids TEXT, fetched TEXT);
CREATE TABLE card (card_uuid TEXT NOT NULL, rule_id TEXT NOT NULL, indicator TEXT NOT NULL,
    invocation_id INTEGER NOT NULL REFERENCES invocation (id),
    PRIMARY KEY (card_uuid, invocation_id));
CREATE INDEX invocation_time ON invocation (time);
INSERT INTO invocation VALUES (1, '2026-01-02T00:00:00.000+00:00', 'svc', 'patient-view',
    'h-old', NULL, NULL, 200, 4.0, NULL, '["r"]', '[]');
INSERT INTO card VALUES ('card-1', 'r', 'info', 1);
""",
}


def test_files_of_the_schema_before_migrations_are_upgraded_in_place(tmp_path):
    for name, script in TODAYS_FILES.items():
        with sqlite3.connect(tmp_path / name) as db:
            db.executescript(script)
    settings = Settings(data_dir=tmp_path)
    stores = open_stores(settings, replay=False, writer=False)
    try:
        assert migrate.revisions(settings) == {
            "feedback": {migrate.head("feedback")},
            "audit": {migrate.head("audit")},
        }
        assert [r["key"] for r in stores.feedback.all()] == ["k1"]
        stores.audit.record(entry(hook_instance="h-new"), [("card-2", "r", "info")])
        rows = stores.audit.invocations()
        assert [(r["id"], r["hook_instance"]) for r in rows] == [(1, "h-old"), (2, "h-new")]
        assert rows[0]["event_id"] is None and rows[1]["event_id"]
    finally:
        stores.close()
    backup = tmp_path / "copy"
    shutil.copytree(tmp_path, backup, ignore=shutil.ignore_patterns("copy"))
    assert migrate.upgrade(Settings(data_dir=backup))["audit"] == {migrate.head("audit")}


def test_a_database_without_the_newest_revision_is_behind(tmp_path):
    with postgres_database() as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
        try:
            with pytest.raises(ConfigurationError, match="cds-service db upgrade"):
                migrate.check_database(engine, url)
            migrate._upgrade(engine, "audit_0001")
            migrate._upgrade(engine, "feedback@head")
            assert migrate.behind(migrate.current(engine)) == ["audit"]
            migrate.upgrade(settings)
            assert migrate.behind(migrate.current(engine)) == []
            migrate.check_database(engine, url)
        finally:
            engine.dispose()


def test_health_says_which_servers_answer(stores):
    state = stores.health()
    assert state == {"database": "ok", "redis": "not configured", "spool": 0}


def test_a_serving_process_answers_health_from_its_monitor_and_readiness_says_why(settings):
    from cds_service.stores import health

    stores = open_stores(settings, replay=False)  # a serving process: the monitor runs
    try:
        assert stores.health() == {"database": "ok", "redis": "not configured", "spool": 0}
        assert health.readiness(stores.health()) is None
    finally:
        stores.close()
    assert health.readiness({"database": "behind", "redis": "ok"}).endswith(
        "run `cds-service db upgrade`"
    )
    assert health.readiness({"database": "ok", "redis": "unavailable"}) == "Redis does not answer"
    assert health.readiness({"database": "starting", "redis": "ok"}).startswith("the first check")


def test_a_question_not_answered_within_its_deadline_is_unavailable_and_not_asked_twice():
    """A server that never answers (its connection kept open) holds one question, not one a
    second."""
    import threading

    from cds_service.stores.health import Probe

    release, asked = threading.Event(), []

    def hangs() -> str:
        asked.append(1)
        release.wait(10)
        return "ok"

    probe = Probe("database", hangs)
    assert probe.answer(0.05) == "unavailable"
    assert probe.answer(0.05) == "unavailable"
    assert len(asked) == 1
    release.set()
    assert probe.answer(5) == "ok"  # the waiting question's answer, when it comes
    assert probe.answer(5) == "ok" and len(asked) == 2


def data_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())
