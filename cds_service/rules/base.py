"""What a rule returns: a Finding with the evidence it used and what it could not read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..chart import Chart, LabResult, Match, Medication, Order

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Evidence:
    what: str
    reference: str | None = None
    code: str | None = None  # "system|code", or "name 'x'" for a name match
    value: str | None = None  # with its unit
    date: str | None = None

    def markdown(self) -> str:
        parts = [self.what]
        if self.value:
            parts.append(f"= {self.value}")
        if self.code:
            parts.append(f"[{self.code}]")
        if self.date:
            parts.append(f"on {self.date}")
        if self.reference:
            parts.append(f"({self.reference})")
        return " ".join(parts)

    @classmethod
    def of_match(cls, what: str, match: Match) -> Evidence:
        return cls(
            f"{what}: {match.fact.label()}", match.fact.reference, match.code, None, match.fact.day
        )

    @classmethod
    def of_result(cls, what: str, result: LabResult) -> Evidence:
        return cls(
            f"{what}: {result.lab.name}",
            result.fact.reference,
            None,
            result.shown(),
            result.fact.day,
        )

    @classmethod
    def of_medication(cls, what: str, medication: Medication, matched: str) -> Evidence:
        day = medication.when.date().isoformat() if medication.when else None
        return cls(f"{what}: {medication.label()}", medication.reference, matched, None, day)

    @classmethod
    def of_order(cls, what: str, order: Order, matched: str | None = None) -> Evidence:
        return cls(f"{what}: {order.label()}", order.reference, matched)


@dataclass(frozen=True)
class Finding:
    rule_id: str
    indicator: str
    evidence: tuple[Evidence, ...] = ()
    missing: tuple[str, ...] = ()
    # Switches for the card content (paragraphs and suggestions marked `when: <flag>`).
    flags: frozenset[str] = frozenset()
    # Short values the card text may quote, e.g. {"drugs": "furosemide"}; never note text.
    values: Mapping[str, str] = field(default_factory=dict)
    # Draft orders a suggestion may delete (order checks): references like ServiceRequest/1.
    orders: tuple[str, ...] = ()


# A rule reads the chart and the findings of the rules that ran before it.
Rule = Callable[[Chart, Mapping[str, Finding]], Finding | None]


@dataclass(frozen=True)
class RegisteredRule:
    rule_id: str
    evaluate: Rule


def evidence_of(what: str, matches: Iterable[Match]) -> list[Evidence]:
    return [Evidence.of_match(what, m) for m in matches]
