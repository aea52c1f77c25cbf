"""Order checks at order-select and order-sign: imaging, quinine, NSAIDs."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart, Order
from .association import RED_FLAG_RULES, nsaid_contraindications
from .base import Evidence, Finding, evidence_of
from .red_flags import back_conditions

EARLY_IMAGING_DAYS = 42  # six weeks


def _orders_in(chart: Chart, group: str) -> list[tuple[Order, str]]:
    value_set = chart.value_set(group)
    matched = ((o, value_set.identify(o.concept)) for o in chart.orders_to_check)
    return [(order, how) for order, how in matched if how is not None]


def imaging_stewardship(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Lumbar imaging ordered within six weeks of the first back pain or sciatica, no red flag."""
    orders = _orders_in(chart, "LUMBAR_IMAGING")
    if not orders or any(rule in prior for rule in RED_FLAG_RULES):
        return None
    dated = [m for m in back_conditions(chart) if m.fact.when is not None]
    if not dated:
        return None
    earliest = min(dated, key=lambda m: m.fact.when)
    if earliest.fact.when <= chart.since(EARLY_IMAGING_DAYS):
        return None
    weeks = (chart.now - earliest.fact.when).days / 7
    evidence = [Evidence.of_order("Lumbar imaging ordered", o, how) for o, how in orders]
    evidence += evidence_of(f"Earliest back pain or sciatica, {weeks:.1f} weeks ago", [earliest])
    evidence.append(Evidence("No red-flag card fired"))
    return Finding(
        "imaging-stewardship",
        "warning",
        tuple(evidence),
        orders=tuple(o.reference for o, _ in orders),
    )


def quinine_caution(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    orders = _orders_in(chart, "QUININE")
    if not orders:
        return None
    return Finding(
        "quinine-caution",
        "warning",
        tuple(Evidence.of_order("Quinine ordered", o, how) for o, how in orders),
        orders=tuple(o.reference for o, _ in orders),
    )


def nsaid_caution(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    orders = _orders_in(chart, "NSAID")
    if not orders:
        return None
    reasons = nsaid_contraindications(chart)
    if not reasons:
        return None
    evidence = [Evidence.of_order("NSAID ordered", o, how) for o, how in orders] + reasons
    return Finding(
        "nsaid-caution",
        "warning",
        tuple(evidence),
        orders=tuple(o.reference for o, _ in orders),
        values={"reasons": "; ".join(r.what for r in reasons)},
    )
