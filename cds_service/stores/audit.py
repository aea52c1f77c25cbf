"""The audit trail store: one row per invocation and one per card shown, on either engine.

`record()` only queues (a request never waits on the database); one writer thread per process
writes the queue every FLUSH_INTERVAL_S. A batch the database does not take goes to the spool
(spool.py) and is drained, oldest file first, once the database answers again.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import operator
import random
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from .. import metrics
from ..cooperative import off_hub
from ..errors import StoreUnavailable
from .schema import card, invocation
from .spool import Spool
from .sql import answering

log = logging.getLogger("cds_service.stores")

# card uuid, rule id, indicator[, evidence digest, quieted (issue 16)]
Card = tuple[str, str, str] | tuple[str, str, str, str | None, bool]
CHUNK = 500  # rows per INSERT: well under SQLite's limit of bound parameters


def _json_list(values: list | tuple | None) -> str:
    """The values as a JSON array, as json.dumps writes it; "[]" for none without asking it
    (1 us a call: the prefetch keys fetched are none on nearly every request)."""
    return json.dumps(values) if values else "[]"


class AuditStore:
    FLUSH_INTERVAL_S = 0.2
    RETRY_S = 1.0  # while the database is down, how often the writer asks again

    def __init__(self, engine: sa.Engine, spool_dir: Path, *, start_writer: bool = True):
        self._engine = engine
        # Under gevent a batch written by sqlite3 stopped every connection of the worker for
        # its whole write (measured: 2,000 rows, 765 ms without a switch; in the hub's native
        # thread pool, the other greenlets ran every few ms).
        self._blocking = engine.dialect.name == "sqlite"
        self._spool = Spool(spool_dir)
        self._queue: list[dict] = []
        self._lock = threading.Lock()  # guards the queue
        self._io = threading.RLock()  # one writer at a time: writes, spool, drains
        self._retry_at = 0.0  # monotonic; before it, batches go straight to the spool
        self._claim_at = 0.0  # next look for spool files (this process's and orphans)
        self.errors = 0  # failed writes and drains, for the metrics
        self._wake = threading.Event()
        self._closed = False
        if start_writer:
            threading.Thread(target=self._run, name="audit-writer", daemon=True).start()
        atexit.register(self.flush)

    def record(self, entry: dict, cards: list[Card]) -> None:
        """Queue one invocation (its access-log record) and the cards it showed."""
        row = {
            # Random, not uuid4: os.urandom cost 25 us a call here (a third of the access
            # log's work). `random` is seeded from urandom per process, again after a fork.
            "event_id": f"{random.getrandbits(128):032x}",
            "time": entry["time"],
            "service_id": entry.get("service_id"),
            "hook": entry.get("hook"),
            "hook_instance": entry.get("hook_instance"),
            "issuer": entry.get("issuer"),
            "tenant": entry.get("tenant"),
            "status": entry["status"],
            "latency_ms": entry["ms"],
            "patient_hash": entry.get("patient"),
            "rule_ids": _json_list(entry.get("rule_ids")),
            "fetched": _json_list(entry.get("fetched")),
            "cards": [list(c) for c in cards],
        }
        with self._lock:
            self._queue.append(row)

    def flush(self) -> None:
        """Write what is queued and drain the spool now (a database that does not answer
        leaves them spooled)."""
        self._flush(force=True)

    def write_queued(self) -> None:
        """Write this process's queued rows now, and nothing else: the spool is the writer's
        to drain (a request must not wait on a backlog). While the database is known to be
        down they go to the spool at once. Under gevent the SQLite write runs off the hub."""
        if self._blocking:
            off_hub(self._flush, False, False)
        else:
            self._flush(False, False)

    def spool_depth(self) -> int:
        return self._spool.depth()

    def invocations(self) -> list[dict]:
        self.flush()
        with answering("audit"), self._engine.connect() as connection:
            rows = connection.execute(sa.select(invocation).order_by(invocation.c.id))
            return [dict(row._mapping) for row in rows]

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                if self._blocking:  # sqlite3 blocks in C: in a native thread under gevent
                    off_hub(self._flush, False)
                else:  # psycopg waits cooperatively
                    self._flush(force=False)
            except Exception as exc:  # keep writing later batches; never crash the worker
                self.errors += 1
                metrics.store_error("audit")
                log.error(json.dumps({"event": "audit_failed", "error": type(exc).__name__}))
            metrics.set_spool_depth(self.spool_depth())

    def _flush(self, force: bool, drain: bool = True) -> None:
        with self._io:
            with self._lock:
                batch, self._queue = self._queue, []
            now = time.monotonic()
            if not force and now < self._retry_at:
                if batch:
                    self._spool.append(batch)
                return
            try:
                if batch:
                    self._write(batch)
                    batch = []
                if drain and (force or now >= self._claim_at):
                    self._claim_at = now + 5 * self.RETRY_S
                    self._drain()
            except StoreUnavailable:
                self.errors += 1
                self._retry_at = time.monotonic() + self.RETRY_S
                self._claim_at = 0.0  # drain as soon as the database answers
                if batch:
                    self._spool.append(batch)
                    log.warning(json.dumps({"event": "audit_spooled", "rows": len(batch)}))

    def _drain(self) -> None:
        for path in self._spool.claim():
            rows = 0
            for batch in self._spool.batches(path, CHUNK):  # streamed: one chunk in memory
                self._write(batch)
                rows += len(batch)
            self._spool.done(path)
            log.info(json.dumps({"event": "audit_spool_drained", "rows": rows}))

    def _write(self, rows: list[dict]) -> None:
        """Store the rows, each once: a row whose event id is stored already is skipped."""
        statements = self._statements
        with answering("audit"), self._engine.begin() as connection:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                # The driver's own SQL (built once per engine, see _Statements): SQLAlchemy's
                # compiled INSERT cost ~60 us of worker CPU per audited request in its
                # per-row parameter handling. exec_driver_sql keeps its transaction, pool and
                # error wrapping (`answering` tells a database that does not answer).
                stored = connection.exec_driver_sql(
                    *statements.invocations([_invocation_values(r) for r in chunk])
                ).all()
                ids = {event_id: row_id for row_id, event_id in stored}
                cards = [
                    (
                        u,
                        rule,
                        indicator,
                        ids[r["event_id"]],
                        # Issue 16: (uuid, rule, indicator, evidence digest, quieted); rows
                        # spooled by an older version have the first three only.
                        rest[0] if rest else None,
                        bool(rest[1]) if len(rest) > 1 else False,
                    )
                    for r in chunk
                    if r["event_id"] in ids
                    for u, rule, indicator, *rest in r["cards"]
                ]
                for first in range(0, len(cards), CHUNK):
                    connection.exec_driver_sql(*statements.cards(cards[first : first + CHUNK]))

    @functools.cached_property
    def _statements(self) -> _Statements:
        return _Statements(self._engine.dialect)

    def close(self) -> None:
        self._closed = True
        atexit.unregister(self.flush)
        self.flush()
        self._spool.close()


# The columns the INSERTs fill, in the schema's order (a queued row's keys are the invocation's
# columns; the row id is the database's), with the PostgreSQL type of the arrays its `unnest`
# reads (an array of bigint fills an integer column by PostgreSQL's assignment cast). Read off
# stores/schema.py, so a column added there is written here too (tests/test_audit_rows.py checks
# the stored values on both engines).
_ARRAY_TYPES = {str: "text", int: "bigint", float: "double precision", bool: "boolean"}


def _columns(table: sa.Table, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {c.name: _ARRAY_TYPES[c.type.python_type] for c in table.columns if c.name not in skip}


INVOCATION_COLUMNS = _columns(invocation, skip=("id",))
CARD_COLUMNS = _columns(card)
_invocation_values = operator.itemgetter(*INVOCATION_COLUMNS)


class _Statements:
    """The audit INSERTs in the driver's SQL for one dialect, and their parameters: what
    SQLAlchemy's `insert(...).on_conflict_do_nothing()` said, written out once. A row whose
    event id is stored already is skipped; the rows taken come back with their ids (RETURNING:
    the cards need them). Only identifiers of the schema are written into the text (quoted by
    the dialect); every value is a bound parameter.

    PostgreSQL: one statement whatever the rows, a column an array (`unnest`). psycopg turns
    the `%s` of a statement into `$n` in Python, and caches that only for short statements:
    for a multi-row VALUES it cost more than SQLAlchemy's whole INSERT. SQLite: one multi-row
    VALUES of `?` per chunk (sqlite3 has no such conversion)."""

    def __init__(self, dialect: sa.Dialect):
        quote = dialect.identifier_preparer.quote
        self._unnest = dialect.name == "postgresql"
        self._invocation = self._insert(quote, invocation.name, INVOCATION_COLUMNS)
        self._invocation_tail = (
            f" ON CONFLICT ({quote('event_id')}) DO NOTHING "
            f"RETURNING {quote('id')}, {quote('event_id')}"
        )
        self._card = self._insert(quote, card.name, CARD_COLUMNS)

    def _insert(self, quote, table: str, columns: dict[str, str]) -> str:
        head = f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) "
        if self._unnest:
            arrays = ", ".join(f"%s::{pg_type}[]" for pg_type in columns.values())
            return head + f"SELECT * FROM unnest({arrays})"  # noqa: S608 (identifiers only)
        return head + "VALUES "

    def invocations(self, rows: list[tuple]) -> tuple[str, tuple]:
        return self._statement(self._invocation, rows, self._invocation_tail)

    def cards(self, rows: list[tuple]) -> tuple[str, tuple]:
        return self._statement(self._card, rows, " ON CONFLICT DO NOTHING")

    def _statement(self, head: str, rows: list[tuple], tail: str) -> tuple[str, tuple]:
        if self._unnest:
            return head + tail, tuple(map(list, zip(*rows, strict=True)))
        one = "(" + ", ".join(["?"] * len(rows[0])) + ")"
        return head + ", ".join([one] * len(rows)) + tail, tuple(v for r in rows for v in r)
