"""The rule registry: pure functions (chart, earlier findings) -> Finding | None.

Rules run only when the patient reports cramps (the catalog's trigger), in an order where each
rule sees the findings it depends on (red flags, then other causes, then the association and
management, then order checks). Cards come out critical, then warning, then info, each group in
catalog order, at most one per rule.
"""

from __future__ import annotations

from ..chart import Chart
from .association import cramp_sciatica_association, sciatica_management
from .base import INDICATOR_ORDER, Evidence, Finding, RegisteredRule
from .order_checks import imaging_stewardship, nsaid_caution, quinine_caution
from .other_causes import (
    comorbidity_cramp_cause,
    cramp_labs_missing,
    electrolyte_cramp_cause,
    medication_cramp_cause,
)
from .red_flags import cauda_equina_red_flag, motor_deficit_red_flag, serious_pathology_red_flag
from .trigger import cramp_evidence

# In evaluation order; this is also the catalog's order of rules.
REGISTRY: tuple[RegisteredRule, ...] = (
    RegisteredRule("cauda-equina-red-flag", cauda_equina_red_flag),
    RegisteredRule("motor-deficit-red-flag", motor_deficit_red_flag),
    RegisteredRule("serious-pathology-red-flag", serious_pathology_red_flag),
    RegisteredRule("electrolyte-cramp-cause", electrolyte_cramp_cause),
    RegisteredRule("cramp-labs-missing", cramp_labs_missing),
    RegisteredRule("medication-cramp-cause", medication_cramp_cause),
    RegisteredRule("comorbidity-cramp-cause", comorbidity_cramp_cause),
    RegisteredRule("cramp-sciatica-association", cramp_sciatica_association),
    RegisteredRule("sciatica-management", sciatica_management),
    RegisteredRule("imaging-stewardship", imaging_stewardship),
    RegisteredRule("quinine-caution", quinine_caution),
    RegisteredRule("nsaid-caution", nsaid_caution),
)
RULE_IDS = tuple(rule.rule_id for rule in REGISTRY)
_CATALOG_ORDER = {rule_id: index for index, rule_id in enumerate(RULE_IDS)}

__all__ = ["REGISTRY", "RULE_IDS", "Evidence", "Finding", "evaluate_rules"]


def evaluate_rules(chart: Chart) -> tuple[list[Finding], list[Evidence]]:
    """Findings in card order, and the evidence that the patient reports cramps."""
    trigger = cramp_evidence(chart)
    if not trigger:
        return [], []
    findings: dict[str, Finding] = {}
    for rule in REGISTRY:
        finding = rule.evaluate(chart, findings)
        if finding is not None:
            findings[rule.rule_id] = finding
    ordered = sorted(
        findings.values(),
        key=lambda f: (INDICATOR_ORDER[f.indicator], _CATALOG_ORDER[f.rule_id]),
    )
    return ordered, trigger
