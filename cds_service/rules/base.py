"""What a rule returns: a Finding with the evidence it used and what it could not read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..chart import Chart

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Evidence:
    what: str
    reference: str | None = None
    code: str | None = None  # "system|code"
    value: str | None = None  # with unit
    date: str | None = None

    def markdown(self) -> str:
        parts = [self.what]
        if self.value:
            parts.append(self.value)
        if self.code:
            parts.append(f"code {self.code}")
        if self.date:
            parts.append(f"dated {self.date}")
        if self.reference:
            parts.append(f"({self.reference})")
        return " ".join(parts)


@dataclass(frozen=True)
class Finding:
    rule_id: str
    indicator: str
    evidence: tuple[Evidence, ...] = ()
    missing: tuple[str, ...] = ()
    # Values the card content may use (e.g. which suggestions apply); never free text of a note.
    facts: dict = field(default_factory=dict)


Rule = Callable[[Chart], Finding | None]


@dataclass(frozen=True)
class RegisteredRule:
    rule_id: str
    evaluate: Rule
