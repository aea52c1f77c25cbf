"""The trigger: every rule of this service runs only for a patient who reports muscle cramps."""

from __future__ import annotations

from ..chart import Chart
from ..terminology import codings_of
from .base import Evidence

CRAMP = "CRAMP"
CONDITION_LOOKBACK_DAYS = 90
OBSERVATION_LOOKBACK_DAYS = 30
ABSENT_CODES = {"260413007", "absent", "N", "no"}  # SNOMED "None", v2-style no


def cramp_evidence(chart: Chart) -> list[Evidence]:
    """How the patient reported cramps; empty when they did not."""
    evidence = [
        Evidence(
            f"Cramp condition: {m.fact.label()}",
            m.fact.reference,
            f"{m.coding.system}|{m.coding.code}",
            date=_day(m.fact.when),
        )
        for m in chart.conditions_in(CRAMP, CONDITION_LOOKBACK_DAYS)
    ]
    for match in chart.observations_in(CRAMP, OBSERVATION_LOOKBACK_DAYS):
        if _negated(match.fact.resource):
            continue
        evidence.append(
            Evidence(
                f"Cramp finding: {match.fact.label()}",
                match.fact.reference,
                f"{match.coding.system}|{match.coding.code}",
                date=_day(match.fact.when),
            )
        )
    value_set = chart.value_set(CRAMP)
    for order in chart.draft_orders:
        for reason in order.get("reasonCode") or []:
            coding = value_set.match(reason)
            if coding is not None:
                reference = f"{order.get('resourceType')}/{order.get('id', '?')}"
                evidence.append(
                    Evidence(
                        "Draft order placed for cramps",
                        reference,
                        f"{coding.system}|{coding.code}",
                    )
                )
                break
    return evidence


def _negated(observation: dict) -> bool:
    if observation.get("valueBoolean") is False:
        return True
    value = observation.get("valueCodeableConcept")
    if isinstance(value, dict):
        text = str(value.get("text") or "").lower()
        if text in {"absent", "no", "none"}:
            return True
        return any(
            c.code in ABSENT_CODES or c.display.lower() == "absent" for c in codings_of(value)
        )
    return False


def _day(when) -> str | None:
    return when.date().isoformat() if when else None
