"""Feedback analytics: per rule id, how often its card was shown, accepted and overridden.

The store answers (cds_service.stores: the embedded SQLite files or the shared database) with
the cards shown per rule and indicator, and the feedback outcomes per rule (joined through the
card uuid); this module folds them into one row per rule. Nothing here reads or returns a
patient identifier.

A period is a range of whole UTC days, both ends included. A card counts as fired on the day
of its invocation; an outcome counts on the day the service received it (the server's clock,
not the client's `outcomeTimestamp`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

# The rule id of feedback about a card the audit store never recorded (never issued, or issued
# before the audit trail began): counted apart from every rule, its override reasons not listed
# (they are the sender's words about no card of ours).
UNKNOWN_CARD = ""
INDICATORS = ("critical", "warning", "info")  # as a card's `indicator`, most urgent first


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


def fold(
    fired: Iterable[tuple[str, str, int]],
    outcomes: Iterable[tuple[str | None, str, str | None, str | None, int]],
    rule_ids: Iterable[str] = (),
) -> list[RuleActivity]:
    """The store's grouped rows as one row per rule: `rule_ids` first, in their order (zeros
    included), then any other rule id found in the period, then UNKNOWN_CARD if feedback named
    a card never audited. `fired`: (rule id, indicator, count); `outcomes`: (rule id or None,
    outcome, override reason system, code, count)."""
    rows: dict[str, RuleActivity] = {r: RuleActivity(r) for r in rule_ids}
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
