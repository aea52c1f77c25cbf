"""Feedback analytics: per rule id, how often its card was shown, accepted and overridden.

Read-only queries over the two SQLite stores the service writes: the audit store (`card`:
card uuid -> rule id and indicator, per invocation, with the invocation's time) and the
feedback store (`feedback`: one row per outcome, keyed by card uuid). Feedback is joined to a
rule through the card uuid. Nothing here reads or returns a patient identifier.

A period is a range of whole UTC days, both ends included. A card counts as fired on the day
of its invocation; an outcome counts on the day the service received it (the server's clock,
not the client's `outcomeTimestamp`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

# The rule id of feedback about a card the audit store never recorded (never issued, or issued
# before the audit trail began): counted apart from every rule, its override reasons not listed
# (they are the sender's words about no card of ours).
UNKNOWN_CARD = ""


@dataclass
class RuleActivity:
    rule_id: str
    fired: int = 0
    indicators: dict[str, int] = field(default_factory=dict)  # indicator -> times shown
    accepted: int = 0
    overridden: int = 0
    # (system, code) of the override reason -> count; (None, None) when none was given.
    reasons: dict[tuple[str | None, str | None], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # included

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("the period ends before it starts")
        if self.end >= date.max:  # its end bound, the day after, is beyond the calendar
            raise ValueError("the period ends on the last day there is")

    @property
    def bounds(self) -> tuple[str, str]:
        """ISO strings for `start <= time < end` over the stores' UTC ISO 8601 times."""
        return self.start.isoformat(), (self.end + timedelta(days=1)).isoformat()


_FIRED = """
SELECT c.rule_id, c.indicator, COUNT(*)
FROM card AS c JOIN invocation AS i ON i.id = c.invocation_id
WHERE i.time >= ? AND i.time < ?
GROUP BY c.rule_id, c.indicator
"""

# One rule id per card uuid (a uuid is derived from the hook instance and the rule id, so the
# same card shown again by a repeated hook instance maps to the same rule).
_OUTCOMES = """
WITH shown AS (SELECT card_uuid, MIN(rule_id) AS rule_id FROM card GROUP BY card_uuid)
SELECT s.rule_id, f.outcome, f.override_reason_system, f.override_reason_code, COUNT(*)
FROM fb.feedback AS f LEFT JOIN shown AS s ON s.card_uuid = lower(f.card_uuid)
WHERE f.received_at >= ? AND f.received_at < ?
GROUP BY s.rule_id, f.outcome, f.override_reason_system, f.override_reason_code
"""


def rule_activity(
    audit_db: Path, feedback_db: Path, period: Period, rule_ids: Iterable[str] = ()
) -> list[RuleActivity]:
    """One row per rule: `rule_ids` first, in their order (zeros included), then any other
    rule id found in the period, then UNKNOWN_CARD if feedback named a card never audited."""
    rows: dict[str, RuleActivity] = {r: RuleActivity(r) for r in rule_ids}
    fired: list[tuple[str, str, int]] = []
    outcomes: list[tuple[str | None, str, str | None, str | None, int]] = []
    if audit_db.exists():
        with closing(_connect(audit_db)) as db:
            fired = db.execute(_FIRED, period.bounds).fetchall()
            if feedback_db.exists():
                db.execute("ATTACH DATABASE ? AS fb", (_read_only_uri(feedback_db),))
                outcomes = db.execute(_OUTCOMES, period.bounds).fetchall()
    elif feedback_db.exists():
        with closing(_connect(feedback_db)) as db:
            outcomes = db.execute(
                "SELECT NULL, outcome, override_reason_system, override_reason_code, COUNT(*)"
                " FROM feedback WHERE received_at >= ? AND received_at < ?"
                " GROUP BY outcome, override_reason_system, override_reason_code",
                period.bounds,
            ).fetchall()
    for rule_id, indicator, count in sorted(fired):
        row = rows.setdefault(rule_id, RuleActivity(rule_id))
        row.fired += count
        row.indicators[indicator] = row.indicators.get(indicator, 0) + count
    for rule_id, outcome, system, code, count in sorted(outcomes, key=_sort_key):
        row = rows.setdefault(rule_id or UNKNOWN_CARD, RuleActivity(rule_id or UNKNOWN_CARD))
        if outcome == "accepted":
            row.accepted += count
        elif outcome == "overridden":
            row.overridden += count
            if rule_id is None:
                continue  # a card the service never issued: counted apart, its reasons unlisted
            reason = (system, code) if code else (None, None)
            row.reasons[reason] = row.reasons.get(reason, 0) + count
    unknown = rows.pop(UNKNOWN_CARD, None)
    return [*rows.values(), *([unknown] if unknown else [])]


def _sort_key(row: tuple) -> tuple:
    return tuple("" if value is None else str(value) for value in row)


def _read_only_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(_read_only_uri(path), uri=True, timeout=10)
    db.execute("PRAGMA busy_timeout=10000")
    return db
