"""The trigger: every rule of this service runs only for a patient who reports muscle cramps."""

from __future__ import annotations

from ..chart import Chart, Match
from .base import Evidence

CRAMP = "CRAMP"
CONDITION_LOOKBACK_DAYS = 90
OBSERVATION_LOOKBACK_DAYS = 30


def cramp_reports(chart: Chart) -> list[Match]:
    """Cramp conditions dated within 90 days, cramp findings within 30 days, not negated, and
    current cramps written in the draft note at note signing (trigger 4)."""
    return (
        chart.conditions_in(CRAMP, CONDITION_LOOKBACK_DAYS)
        + chart.observations_in(CRAMP, OBSERVATION_LOOKBACK_DAYS)
        + chart.noted_in(CRAMP)
    )


def cramp_evidence(chart: Chart) -> list[Evidence]:
    """How the patient reported cramps; empty when they did not."""
    evidence = [Evidence.of_match("Cramps reported", match) for match in cramp_reports(chart)]
    value_set = chart.value_set(CRAMP)
    for order in chart.draft_orders:
        for reason in order.resource.get("reasonCode") or []:
            coding = value_set.match(reason)
            if coding is not None:
                evidence.append(
                    Evidence.of_order(
                        "Draft order placed for cramps", order, f"{coding.system}|{coding.code}"
                    )
                )
                break
    return evidence
