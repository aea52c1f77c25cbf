"""The feedback store: each outcome once (a key made of what identifies it), on either engine."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa

from ..feedback import canonical_card, canonical_timestamp
from .schema import feedback
from .sql import answering, insert


class FeedbackStore:
    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def add(self, service_id: str, items: list[dict]) -> int:
        """Store the items; the number that were new (the rest had been stored before).
        StoreUnavailable when the database does not answer."""
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, item, now) for item in items]
        if not rows:
            return 0
        with answering("feedback"), self._engine.begin() as connection:
            stored = connection.execute(
                insert(self._engine, feedback)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(feedback.c.key)
            ).all()
        return len(stored)

    def all(self) -> list[dict]:
        with answering("feedback"), self._engine.connect() as connection:
            rows = connection.execute(sa.select(feedback).order_by(feedback.c.received_at))
            return [dict(row._mapping) for row in rows]


def _row(service_id: str, item: dict, received_at: str) -> dict:
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
    return {
        "key": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
        "service_id": service_id,
        "card_uuid": card,
        "outcome": item["outcome"],
        "outcome_timestamp": timestamp,
        "accepted_suggestions": json.dumps(accepted) if accepted else None,
        "override_reason_system": reason.get("system"),
        "override_reason_code": reason.get("code"),
        "received_at": received_at,
    }
