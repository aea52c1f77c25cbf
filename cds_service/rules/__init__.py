"""The rule registry: pure functions chart -> Finding | None, run in catalog order.

Rules run only when the patient reports cramps (the catalog's trigger); the registry then
orders findings (critical, warning, info) and applies the catalog's silencing.
"""

from __future__ import annotations

from ..chart import Chart
from .base import INDICATOR_ORDER, Evidence, Finding, RegisteredRule
from .other_causes import cramp_labs_missing
from .trigger import cramp_evidence

REGISTRY: tuple[RegisteredRule, ...] = (RegisteredRule("cramp-labs-missing", cramp_labs_missing),)

__all__ = ["REGISTRY", "Evidence", "Finding", "evaluate_rules"]


def evaluate_rules(chart: Chart) -> tuple[list[Finding], list[Evidence]]:
    """Findings in card order, and the evidence that the patient reports cramps."""
    trigger = cramp_evidence(chart)
    if not trigger:
        return [], []
    findings: dict[str, Finding] = {}
    for rule in REGISTRY:
        finding = rule.evaluate(chart)
        if finding is not None and finding.rule_id not in findings:  # one card per rule
            findings[finding.rule_id] = finding
    ordered = sorted(findings.values(), key=lambda f: INDICATOR_ORDER[f.indicator])
    return ordered, trigger
