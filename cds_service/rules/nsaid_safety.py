"""When an NSAID is not safe: the catalog's NSAID_CONTRAINDICATION and NSAID_CAUTION.

Shared by the management card (whether it may offer one-click ibuprofen) and the NSAID order
check. Each reason is Evidence whose label key the cards word.
"""

from __future__ import annotations

from ..chart import Chart
from ..labs import EGFR, EGFR_CKD_BELOW, EGFR_NSAID_BELOW
from .base import Evidence, of, of_medications, of_orders, of_result
from .episode import pregnancy

GI_LOOKBACK_DAYS = 365
OLDER_ADULT_AGE = 65


def contraindications(chart: Chart, checking: tuple[str, ...] = ()) -> list[Evidence]:
    """Why an NSAID must not be given. `checking`: the draft NSAID orders being checked (they
    are not a duplicate of themselves)."""
    reasons: list[Evidence] = []
    egfr, _ = chart.latest_result(EGFR)
    if egfr is not None and egfr.value < EGFR_NSAID_BELOW:
        reasons.append(of_result("egfr-below-30", egfr))
    reasons += of("ckd-severe", chart.lasting_in("CKD_SEVERE"))
    reasons += pregnancy(chart)
    reasons += of_medications("anticoagulant", chart.medications_in("ANTICOAGULANT"))
    reasons += of("heart-failure", chart.lasting_in("HEART_FAILURE"))
    reasons += of(
        "gi-ulcer-bleed",
        chart.problems_in("GI_ULCER_BLEED")
        + chart.past_conditions_in("GI_ULCER_BLEED", GI_LOOKBACK_DAYS),
    )
    reasons += [
        Evidence("nsaid-allergy", allergy=a, coding=c)
        for a, c in chart.allergies_in("NSAID_ALLERGY")
    ]
    drafts = {o.reference for o in chart.draft_orders}
    reasons += of_medications(
        "nsaid-active",
        [(m, c) for m, c in chart.medications_in("NSAID") if m.reference not in drafts],
    )
    others = [(o, c) for o, c in chart.draft_orders_in("NSAID") if o.reference not in checking]
    reasons += of_orders("nsaid-draft", others)
    return reasons


def cautions(chart: Chart) -> list[Evidence]:
    """Why an NSAID needs care (no one-click NSAID; the NSAID order check is info)."""
    reasons: list[Evidence] = []
    if chart.age is not None and chart.age >= OLDER_ADULT_AGE:
        reasons.append(Evidence("age-65", values=(("age", str(chart.age)),)))
    egfr, _ = chart.latest_result(EGFR)
    if egfr is not None and EGFR_NSAID_BELOW <= egfr.value < EGFR_CKD_BELOW:
        reasons.append(of_result("egfr-30-59", egfr))
    reasons += of("ckd-stage-3", chart.lasting_in("CKD_STAGE3"))
    ace_arb, diuretic = chart.medications_in("ACE_ARB"), chart.medications_in("DIURETIC")
    if ace_arb and diuretic:
        reasons += of_medications("triple-whammy", ace_arb + diuretic)
    reasons += of_medications("antiplatelet", chart.medications_in("ANTIPLATELET"))
    reasons += of_medications("ssri-snri", chart.medications_in("SSRI_SNRI"))
    reasons += of_medications("oral-steroid", chart.medications_in("ORAL_STEROID"))
    if not chart.allergies_known:
        reasons.append(Evidence("allergies-unknown"))
    return reasons
