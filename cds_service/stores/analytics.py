"""Analytics queries: the cards shown and the feedback received in a period, grouped per rule,
from the embedded files (read-only, the feedback file attached to the audit file) or from the
shared tables of a server database. `cds_service.analytics` folds the rows into RuleActivity."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa

from .. import analytics
from .sql import answering

_FIRED = """
SELECT c.rule_id, c.indicator, COUNT(*)
FROM card AS c JOIN invocation AS i ON i.id = c.invocation_id
WHERE i.time >= {start} AND i.time < {end}
GROUP BY c.rule_id, c.indicator
"""

# One rule id per card uuid (a uuid is derived from the hook instance and the rule id, so the
# same card shown again by a repeated hook instance maps to the same rule); only the cards that
# feedback of the period names are looked up.
_OUTCOMES = """
WITH period AS (
    SELECT lower(card_uuid) AS card_uuid, outcome, override_reason_system,
        override_reason_code
    FROM {fb}feedback WHERE received_at >= {start} AND received_at < {end}
),
shown AS (
    SELECT card_uuid, MIN(rule_id) AS rule_id FROM card
    WHERE card_uuid IN (SELECT card_uuid FROM period) GROUP BY card_uuid
)
SELECT s.rule_id, p.outcome, p.override_reason_system, p.override_reason_code, COUNT(*)
FROM period AS p LEFT JOIN shown AS s ON s.card_uuid = p.card_uuid
GROUP BY s.rule_id, p.outcome, p.override_reason_system, p.override_reason_code
"""

_OUTCOMES_ONLY = """
SELECT NULL, outcome, override_reason_system, override_reason_code, COUNT(*)
FROM feedback WHERE received_at >= ? AND received_at < ?
GROUP BY outcome, override_reason_system, override_reason_code
"""


class EmbeddedAnalytics:
    """Reads the files without creating, locking or changing them (the service keeps writing
    while they are read); a file not there yet means no activity."""

    def __init__(self, audit_db: Path, feedback_db: Path):
        self._audit_db, self._feedback_db = audit_db, feedback_db

    def rule_activity(
        self, period: analytics.Period, rule_ids: Iterable[str] = ()
    ) -> list[analytics.RuleActivity]:
        fired: list = []
        outcomes: list = []
        bounds = period.bounds
        if self._audit_db.exists():
            with closing(_read_only(self._audit_db)) as db:
                fired = db.execute(_FIRED.format(start="?", end="?"), bounds).fetchall()
                if self._feedback_db.exists():
                    db.execute("ATTACH DATABASE ? AS fb", (_uri(self._feedback_db),))
                    query = _OUTCOMES.format(fb="fb.", start="?", end="?")
                    outcomes = db.execute(query, bounds).fetchall()
        elif self._feedback_db.exists():
            with closing(_read_only(self._feedback_db)) as db:
                outcomes = db.execute(_OUTCOMES_ONLY, bounds).fetchall()
        return analytics.fold(fired, outcomes, rule_ids)


class SharedAnalytics:
    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def rule_activity(
        self, period: analytics.Period, rule_ids: Iterable[str] = ()
    ) -> list[analytics.RuleActivity]:
        start, end = period.bounds
        params = {"start": start, "end": end}
        with answering("analytics"), self._engine.connect() as connection:
            fired = connection.execute(
                sa.text(_FIRED.format(start=":start", end=":end")), params
            ).all()
            outcomes = connection.execute(
                sa.text(_OUTCOMES.format(fb="", start=":start", end=":end")), params
            ).all()
        return analytics.fold([tuple(r) for r in fired], [tuple(r) for r in outcomes], rule_ids)


def _uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def _read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(_uri(path), uri=True, timeout=10)
    db.execute("PRAGMA busy_timeout=10000")
    return db
