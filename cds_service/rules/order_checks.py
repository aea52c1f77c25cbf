"""Order checks at order-select and order-sign: imaging, quinine, NSAIDs."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart
from .base import Evidence, Finding, flags, of_orders, rule
from .episode import episode_onset, new_episode
from .nsaid_safety import cautions, contraindications
from .red_flags import RED_FLAG_RULES

ORDER_HOOKS = frozenset({"order-select", "order-sign"})


@rule("imaging-stewardship", hooks=ORDER_HOOKS)
def imaging_stewardship(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Lumbar X-ray, CT or MRI ordered in a new episode (under six weeks), no red flag."""
    orders = chart.orders_in("LUMBAR_IMAGING")
    if not orders or any(rule_id in prior for rule_id in RED_FLAG_RULES):
        return None
    if not new_episode(chart):
        return None
    onset = episode_onset(chart)
    evidence = of_orders("imaging-ordered", orders) + [Evidence("episode-onset", match=onset)]
    return Finding(
        "warning",
        tuple(evidence),
        decisive=evidence[-1],
        orders=tuple(o.reference for o, _ in orders),
    )


@rule("quinine-caution", hooks=ORDER_HOOKS)
def quinine_caution(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    orders = chart.orders_in("QUININE")
    if not orders:
        return None
    evidence = of_orders("quinine-ordered", orders)
    return Finding(
        "warning",
        tuple(evidence),
        decisive=evidence[0],
        orders=tuple(o.reference for o, _ in orders),
    )


@rule("nsaid-caution", hooks=ORDER_HOOKS)
def nsaid_caution(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """An NSAID ordered with a contraindication (warning) or a caution (info)."""
    orders = chart.orders_in("NSAID")
    if not orders:
        return None
    checking = tuple(o.reference for o, _ in orders)
    blocked = contraindications(chart, checking)
    careful = [] if blocked else cautions(chart)
    if not blocked and not careful:
        return None
    reasons = blocked or careful
    age_only = not blocked and {e.label for e in careful} == {"age-65"}
    return Finding(
        "warning" if blocked else "info",
        tuple(of_orders("nsaid-ordered", orders) + reasons),
        flags=flags(contraindicated=bool(blocked), caution=not blocked, age_only=age_only),
        decisive=reasons[0],
        reasons=tuple(dict.fromkeys(e.label for e in reasons)),
        orders=checking if blocked else (),
    )
