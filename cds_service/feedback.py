"""Feedback store: each outcome stored once, durably, in SQLite (safe across processes)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from . import fhirdates, validation
from .errors import InvalidRequest, Issue
from .tolerant import tolerate_feedback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    key TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_reason_system TEXT,
    override_reason_code TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid);
"""


_ITEM_FIELDS = {"card", "outcome", "outcomeTimestamp", "acceptedSuggestions", "overrideReason"}


def parse_feedback(body: object) -> list[dict]:
    """The feedback items of a wrapped `{"feedback": [...]}` body or a single unwrapped one."""
    if not isinstance(body, dict):
        raise InvalidRequest("The feedback body must be a JSON object", "body")
    unwrapped = "feedback" not in body and bool(_ITEM_FIELDS & body.keys())
    if unwrapped:
        body = {"feedback": [body]}
    tolerate_feedback(body)
    issues = validation.problems("feedback", body)
    if issues:
        # An unwrapped item's errors name its own fields (`card`), not `feedback[0].card`.
        raise InvalidRequest([_unwrap(i) for i in issues] if unwrapped else issues)
    return body["feedback"]


# The bounds of what one outcome may store are in schemas/feedback.json (documented in the
# OpenAPI document and README "Hardening"): 100 items, 20 accepted suggestions with ids of 128
# characters, override reason system 256, code 64, display 256, comment 2,000 characters.


def canonical_card(card: str) -> str:
    """A card uuid as the service issues it: lower case, without `urn:uuid:`."""
    card = card.strip()
    if card[:9].lower() == "urn:uuid:":
        card = card[9:]
    return card.lower()


def canonical_timestamp(value: str) -> str:
    """One spelling per instant: UTC, `T` and `Z`, seconds always, a fraction only when it is
    not zero (`12:05:00.000+00:00` and `12:05:00Z` are the same outcome). A date alone stays a
    date. The schema has checked the form."""
    text = value.strip().upper()
    moment = fhirdates.parse(text)
    if moment is None or len(text) <= 10:
        return text
    fraction = ""
    dot = text.find(".", 10)
    if dot >= 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        fraction = text[dot + 1 : end].rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _unwrap(issue: Issue) -> Issue:
    item = "feedback[0]"
    expression = issue.expression
    if expression == item:
        expression = None
    elif expression and expression.startswith(f"{item}."):
        expression = expression.removeprefix(f"{item}.")
    diagnostics = issue.diagnostics
    if diagnostics.startswith(f"{item}."):
        diagnostics = diagnostics.removeprefix(f"{item}.")
    elif diagnostics.startswith(item):
        diagnostics = "body" + diagnostics.removeprefix(item)
    return replace(issue, expression=expression, diagnostics=diagnostics)


class FeedbackStore:
    """SQLite in WAL mode; a unique key per outcome makes repeated feedback idempotent."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=10000")
            self._local.connection = connection
        return connection

    def add(self, service_id: str, items: list[dict]) -> int:
        """Store the items; the number that were new (the rest had been stored before)."""
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, item, now) for item in items]
        db = self._connect()
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return db.total_changes - before

    def all(self) -> list[dict]:
        db = self._connect()
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY received_at")]
        finally:
            db.row_factory = None


def _row(service_id: str, item: dict, received_at: str) -> tuple:
    accepted = sorted(s["id"] for s in item.get("acceptedSuggestions") or [])
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    card = canonical_card(item["card"])
    timestamp = canonical_timestamp(item["outcomeTimestamp"])
    identity = {
        "service": service_id,
        "card": card,
        "outcome": item["outcome"],
        "timestamp": timestamp,
        "accepted": accepted,
        "reason": [reason.get("system"), reason.get("code")],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return (
        key,
        service_id,
        card,
        item["outcome"],
        timestamp,
        json.dumps(accepted) if accepted else None,
        reason.get("system"),
        reason.get("code"),
        received_at,
    )
