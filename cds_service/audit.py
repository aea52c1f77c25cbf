"""The audit trail: one row per invocation, beside the feedback store (SQLite).

It keeps ids, timings and rule ids: which cards (uuid -> rule id) were shown, for whom (a keyed
hash of the patient id, never the id), by which client. Feedback analytics join on card uuid.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from .cooperative import off_hub

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocation (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    service_id TEXT,
    hook TEXT,
    hook_instance TEXT,
    issuer TEXT,
    tenant TEXT,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    patient_hash TEXT,
    rule_ids TEXT,
    fetched TEXT
);
CREATE TABLE IF NOT EXISTS card (
    card_uuid TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    indicator TEXT NOT NULL,
    invocation_id INTEGER NOT NULL REFERENCES invocation (id),
    PRIMARY KEY (card_uuid, invocation_id)
);
CREATE INDEX IF NOT EXISTS invocation_time ON invocation (time);
"""


class AuditStore:
    """Rows are queued by the request and written in batches by one thread per process, so a
    request never waits on the database (nor on another worker's write lock). `flush()` writes
    what is queued; it runs at exit too."""

    FLUSH_INTERVAL_S = 0.2

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        self._queue: list[tuple[dict, list[tuple[str, str, str]]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._writer.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep writing later batches; never crash the worker
                log.error(json.dumps({"event": "audit_failed", "error": type(exc).__name__}))

    def record(self, entry: dict, cards: list[tuple[str, str, str]]) -> None:
        """Queue one invocation: its log record and the (uuid, rule id, indicator) of its cards."""
        with self._lock:
            self._queue.append((entry, cards))

    def flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if batch:  # under gevent, in a native thread: a batch took up to 30 ms of the worker
            off_hub(self._write, batch)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _write(self, batch: list[tuple[dict, list[tuple[str, str, str]]]]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for entry, cards in batch:
                self._insert(db, entry, cards)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _insert(db: sqlite3.Connection, entry: dict, cards: list[tuple[str, str, str]]) -> None:
        cursor = db.execute(
            "INSERT INTO invocation (time, service_id, hook, hook_instance, issuer, tenant,"
            " status, latency_ms, patient_hash, rule_ids, fetched)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry["time"],
                entry.get("service_id"),
                entry.get("hook"),
                entry.get("hook_instance"),
                entry.get("issuer"),
                entry.get("tenant"),
                entry["status"],
                entry["ms"],
                entry.get("patient"),
                json.dumps(entry.get("rule_ids") or []),
                json.dumps(entry.get("fetched") or []),
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO card VALUES (?, ?, ?, ?)",
            [(u, rule, indicator, cursor.lastrowid) for u, rule, indicator in cards],
        )

    def invocations(self) -> list[dict]:
        self.flush()
        db = self._db()
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM invocation ORDER BY id")]
        finally:
            db.row_factory = None


class PatientHasher:
    """A keyed hash of patient ids for logs: stable across processes, useless without the key.

    The key comes from CDS_LOG_HASH_KEY, or is made once and kept (mode 0600) in the data dir.
    """

    def __init__(self, key: str | None, data_dir: Path):
        self._key = (key or _stored_key(data_dir)).encode()

    def __call__(self, patient_id: str) -> str:
        return hmac.new(self._key, patient_id.encode(), hashlib.sha256).hexdigest()[:20]


def _stored_key(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "log-hash.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(200):  # another worker is writing it right now
            key = path.read_text().strip()
            if len(key) == 64:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} does not hold a log hash key") from None
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_text().strip()
