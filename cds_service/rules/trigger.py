"""The trigger: the rules run for a patient who reports muscle cramps (CLINICAL_RULES.md)."""

from __future__ import annotations

from ..chart import Chart
from .base import Evidence, of

CRAMP = "CRAMP"
CONDITION_LOOKBACK_DAYS = 90
OBSERVATION_LOOKBACK_DAYS = 30


def cramp_evidence(chart: Chart) -> list[Evidence]:
    """How the patient reported cramps: a cramp Condition within 90 days, a cramp finding
    within 30 days (not negated), current cramps in the draft note, or a draft order placed for
    cramps. Empty when they did not."""
    evidence = of("cramps", chart.conditions_in(CRAMP, CONDITION_LOOKBACK_DAYS))
    evidence += of("cramps", chart.observations_in(CRAMP, OBSERVATION_LOOKBACK_DAYS))
    evidence += of("cramps", chart.noted_in(CRAMP))
    evidence += [Evidence("cramp-order", order=order) for order in chart.orders_for(CRAMP)]
    return evidence
