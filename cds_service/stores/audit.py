"""The audit trail store: one row per invocation and one per card shown, on either engine.

`record()` only queues (a request never waits on the database); one writer thread per process
writes the queue every FLUSH_INTERVAL_S. A batch the database does not take goes to the spool
(spool.py) and is drained, oldest file first, once the database answers again.
"""

from __future__ import annotations

import atexit
import json
import logging
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
from .sql import answering, insert

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
        with answering("audit"), self._engine.begin() as connection:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                values = [{k: v for k, v in r.items() if k != "cards"} for r in chunk]
                # One statement with many parameter sets (SQLAlchemy batches them into
                # multi-row INSERTs from one cached compilation): a statement built with
                # .values(rows) was compiled afresh for every batch, 0.3 ms of worker CPU
                # per audited request.
                stored = connection.execute(
                    insert(self._engine, invocation)
                    .on_conflict_do_nothing(index_elements=["event_id"])
                    .returning(invocation.c.id, invocation.c.event_id),
                    values,
                ).all()
                ids = {event_id: row_id for row_id, event_id in stored}
                cards = [
                    {
                        "card_uuid": u,
                        "rule_id": rule,
                        "indicator": indicator,
                        "invocation_id": ids[r["event_id"]],
                        # Issue 16: (uuid, rule, indicator, evidence digest, quieted); rows
                        # spooled by an older version have the first three only.
                        "evidence_digest": rest[0] if rest else None,
                        "quieted": bool(rest[1]) if len(rest) > 1 else False,
                    }
                    for r in chunk
                    if r["event_id"] in ids
                    for u, rule, indicator, *rest in r["cards"]
                ]
                if cards:
                    connection.execute(insert(self._engine, card).on_conflict_do_nothing(), cards)

    def close(self) -> None:
        self._closed = True
        atexit.unregister(self.flush)
        self.flush()
        self._spool.close()
