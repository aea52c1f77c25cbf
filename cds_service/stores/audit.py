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
            "rule_ids": json.dumps(entry.get("rule_ids") or []),
            "fetched": json.dumps(entry.get("fetched") or []),
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
                    statements.invocations(len(chunk)),
                    tuple(value for r in chunk for value in _invocation_values(r)),
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
                    some = cards[first : first + CHUNK]
                    connection.exec_driver_sql(
                        statements.cards(len(some)), tuple(v for c in some for v in c)
                    )

    @functools.cached_property
    def _statements(self) -> _Statements:
        return _Statements(self._engine.dialect)

    def close(self) -> None:
        self._closed = True
        atexit.unregister(self.flush)
        self.flush()
        self._spool.close()


# The invocation table's columns as `record()` names them: (column, key of the queued row).
INVOCATION_COLUMNS = (
    ("event_id", "event_id"),
    ("time", "time"),
    ("service_id", "service_id"),
    ("hook", "hook"),
    ("hook_instance", "hook_instance"),
    ("issuer", "issuer"),
    ("tenant", "tenant"),
    ("status", "status"),
    ("latency_ms", "latency_ms"),
    ("patient_hash", "patient_hash"),
    ("rule_ids", "rule_ids"),
    ("fetched", "fetched"),
)
CARD_COLUMNS = (
    "card_uuid", "rule_id", "indicator", "invocation_id", "evidence_digest", "quieted"
)  # fmt: skip
_invocation_values = operator.itemgetter(*(key for _column, key in INVOCATION_COLUMNS))


class _Statements:
    """The audit INSERTs in the driver's SQL for one dialect (SQLite or PostgreSQL): what
    SQLAlchemy's `insert(...).on_conflict_do_nothing()` says, written out once.

    Invocations go in as one multi-row INSERT per chunk, the rows the database took coming
    back with their ids (RETURNING: the cards need them); a row whose event id is stored
    already is skipped. Cards go in through the driver's executemany."""

    def __init__(self, dialect: sa.Dialect):
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.name == "sqlite" else "%s"  # sqlite3: qmark; psycopg: format
        self._row = "(" + ", ".join([mark] * len(INVOCATION_COLUMNS)) + ")"
        self._head = (
            f"INSERT INTO {quote(invocation.name)} "
            f"({', '.join(quote(column) for column, _key in INVOCATION_COLUMNS)}) VALUES "
        )
        self._tail = (
            f" ON CONFLICT ({quote('event_id')}) DO NOTHING "
            f"RETURNING {quote('id')}, {quote('event_id')}"
        )
        self._card_row = "(" + ", ".join([mark] * len(CARD_COLUMNS)) + ")"
        self._card_head = (
            f"INSERT INTO {quote(card.name)} ({', '.join(map(quote, CARD_COLUMNS))}) VALUES "
        )

    def invocations(self, rows: int) -> str:
        return self._head + ", ".join([self._row] * rows) + self._tail

    def cards(self, rows: int) -> str:
        return self._card_head + ", ".join([self._card_row] * rows) + " ON CONFLICT DO NOTHING"
