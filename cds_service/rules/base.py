"""What a rule returns, and how a rule is declared.

A rule is a pure function of the chart (and the findings of rules that ran before it) that
returns a Finding or None. It says *what* it found, never how to word it: each piece of
evidence names a label key (`evidence:` in cards/_common.yaml) and the record it rests on; the
card renders the words. A rule's id is declared once, by the `rule` decorator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..chart import Allergy, Chart, LabResult, Match, Medication, Order, Unreadable
from ..terminology import Coding

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}
# Which hooks run a rule: every hook, or only those where the chart is opened or a note signed.
ALL_HOOKS = frozenset({"patient-view", "order-select", "order-sign", "dev.crampcds.note-sign"})
CHART_HOOKS = frozenset({"patient-view", "dev.crampcds.note-sign"})


# Evidence and Finding keep the frozen dataclass's equality, repr and read-only fields, but not
# its generated __init__, which sets each field with its own object.__setattr__ call (1.2 us for
# eight fields; a request makes some twenty of them): theirs fill the instance's __dict__ in one
# update (0.5 us). tests/test_rules_construction.py checks each takes exactly its fields, with
# the dataclass's defaults.


@dataclass(frozen=True, init=False)
class Evidence:
    """One finding a card lists: a label key, and the record (or value) behind it."""

    label: str  # a key of `evidence:` in cards/_common.yaml
    match: Match | None = None
    result: LabResult | None = None
    medication: Medication | None = None
    allergy: Allergy | None = None
    order: Order | None = None
    coding: Coding | None = None  # the code that matched a medication, allergy or order
    # Values the label quotes, e.g. (("age", "78"),); never note text.
    values: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        label: str,
        match: Match | None = None,
        result: LabResult | None = None,
        medication: Medication | None = None,
        allergy: Allergy | None = None,
        order: Order | None = None,
        coding: Coding | None = None,
        values: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.__dict__.update(
            label=label,
            match=match,
            result=result,
            medication=medication,
            allergy=allergy,
            order=order,
            coding=coding,
            values=values,
        )

    @property
    def day(self) -> str | None:
        if self.match is not None:
            return self.match.fact.day
        if self.result is not None:
            return self.result.fact.day
        if self.medication is not None:
            return self.medication.day
        return None

    @property
    def reference(self) -> str | None:
        """The record it rests on (for note findings and deletions; never shown)."""
        for record in (self.match and self.match.fact, self.result and self.result.fact):
            if record is not None:
                return record.reference
        for item in (self.medication, self.order, self.allergy):
            if item is not None:
                return item.reference
        return None


@dataclass(frozen=True, init=False)
class Finding:
    indicator: str
    evidence: tuple[Evidence, ...] = ()
    missing: tuple[Unreadable, ...] = ()
    # Switches for the card content (paragraphs and suggestions marked `when:` / `unless:`).
    flags: frozenset[str] = frozenset()
    # The evidence the summary names (its value and date), when there is one.
    decisive: Evidence | None = None
    # Label keys the card text lists by name (e.g. the NSAID cautions), in order.
    reasons: tuple[str, ...] = ()
    # Draft orders a suggestion may delete (order checks): references like ServiceRequest/1.
    orders: tuple[str, ...] = ()
    rule_id: str = ""  # set by the registry from the rule's declaration

    def __init__(
        self,
        indicator: str,
        evidence: tuple[Evidence, ...] = (),
        missing: tuple[Unreadable, ...] = (),
        flags: frozenset[str] = frozenset(),
        decisive: Evidence | None = None,
        reasons: tuple[str, ...] = (),
        orders: tuple[str, ...] = (),
        rule_id: str = "",
    ) -> None:
        self.__dict__.update(
            indicator=indicator,
            evidence=evidence,
            missing=missing,
            flags=flags,
            decisive=decisive,
            reasons=reasons,
            orders=orders,
            rule_id=rule_id,
        )


Rule = Callable[[Chart, Mapping[str, Finding]], Finding | None]


@dataclass(frozen=True)
class RegisteredRule:
    rule_id: str
    evaluate: Rule
    hooks: frozenset[str] = ALL_HOOKS
    needs_cramps: bool = True  # the catalog's trigger; cauda equina is the safety exception

    def run(self, chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
        finding = self.evaluate(chart, prior)
        if finding is None:
            return None
        # The constructor, not dataclasses.replace: replace inspects every field each call
        # (3.5 us, nine times a request); test_rules_registry checks no field is left out.
        return Finding(
            finding.indicator,
            finding.evidence,
            finding.missing,
            finding.flags,
            finding.decisive,
            finding.reasons,
            finding.orders,
            self.rule_id,
        )


REGISTRY: list[RegisteredRule] = []


def rule(rule_id: str, *, hooks: frozenset[str] = ALL_HOOKS, needs_cramps: bool = True):
    """Declare a rule: its public id (`source.topic.code`), the hooks it runs at, and whether
    it waits for reported cramps. Rules run in the order they are declared."""

    def declare(function: Rule) -> Rule:
        REGISTRY.append(RegisteredRule(rule_id, function, hooks, needs_cramps))
        return function

    return declare


# The rules ask for evidence of some forty groups a request, most of them absent from the
# record: an empty list is answered before a comprehension is set up for it.


def of(label: str, matches: Iterable[Match]) -> list[Evidence]:
    """Evidence of the label for each match."""
    if not matches:
        return []
    return [Evidence(label, match=m) for m in matches]


def of_result(label: str, result: LabResult, **values: str) -> Evidence:
    return Evidence(label, result=result, values=tuple(values.items()))


def of_medications(label: str, found: Iterable[tuple[Medication, Coding | None]]) -> list[Evidence]:
    if not found:
        return []
    return [Evidence(label, medication=m, coding=c) for m, c in found]


def of_orders(label: str, found: Iterable[tuple[Order, Coding | None]]) -> list[Evidence]:
    if not found:
        return []
    return [Evidence(label, order=o, coding=c) for o, c in found]


def flags(**switches: bool) -> frozenset[str]:
    return frozenset([name for name, on in switches.items() if on])
