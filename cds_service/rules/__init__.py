"""The rule registry: pure functions (chart, earlier findings) -> Finding | None.

Each rule declares its id, its hooks and whether it waits for reported cramps where it is
defined (`base.rule`). They run in declaration order, where each sees the findings it depends
on: red flags, other causes, the association and management, then order checks. Cards come out
critical, then warning, then info, each group in that order, at most one per rule.
"""

from __future__ import annotations

from importlib import import_module

from ..chart import Chart
from .base import INDICATOR_ORDER, REGISTRY, Evidence, Finding
from .trigger import cramp_evidence

# Importing a module declares its rules, in this order (which is also the card order within
# one indicator): red flags, other causes, association and management, order checks.
for _module in ("red_flags", "other_causes", "association", "order_checks"):
    import_module(f"{__name__}.{_module}")

RULE_IDS = tuple(rule.rule_id for rule in REGISTRY)
_ORDER = {rule_id: index for index, rule_id in enumerate(RULE_IDS)}

__all__ = ["REGISTRY", "RULE_IDS", "Evidence", "Finding", "evaluate_rules"]


def evaluate_rules(chart: Chart) -> tuple[list[Finding], list[Evidence]]:
    """Findings in card order, and the evidence that the patient reports cramps."""
    trigger = cramp_evidence(chart)
    findings: dict[str, Finding] = {}
    for rule in REGISTRY:
        if chart.hook not in rule.hooks or (rule.needs_cramps and not trigger):
            continue
        finding = rule.run(chart, findings)
        if finding is not None:
            findings[rule.rule_id] = finding
    ordered = sorted(
        findings.values(), key=lambda f: (INDICATOR_ORDER[f.indicator], _ORDER[f.rule_id])
    )
    return ordered, trigger
