"""Red flags that need urgent care: cauda equina syndrome, motor deficit, serious pathology."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart, Match
from ..labs import FEVER_AT_OR_ABOVE, PVR, PVR_ABOVE, TEMPERATURE, WEIGHT, WEIGHT_LOSS_FRACTION
from .base import Evidence, Finding, flags, of, of_result, rule
from .episode import back_conditions, new_episode

NEW_SIGN_DAYS = 14
MOTOR_DEFICIT_DAYS = 30
FEVER_DAYS = 7
WEIGHT_LOSS_CODED_DAYS = 365
OLDER_THAN = 50
RED_FLAG_RULES = ("cauda-equina-red-flag", "motor-deficit-red-flag", "serious-pathology-red-flag")
BILATERAL_WORDS = ("bilateral", "both legs", "both feet", "both sides")


def uncertain_in_note(chart: Chart, *groups: str) -> list[Evidence]:
    """Mentions the draft note makes uncertain ("possible numbness"): supporting evidence on a
    card that fired for other reasons, never a reason to fire."""
    return [e for group in groups for e in of("uncertain", chart.noted_in(group, "possible"))]


@rule("cauda-equina-red-flag", needs_cramps=False)
def cauda_equina_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """CAUDA_EQUINA; or back pain or sciatica (active, or a past history of either) with new
    (14 days) bladder or bowel dysfunction, saddle anaesthesia or bilateral sciatica. Runs for
    every patient, cramps or not: the catalog's safety exception."""
    recorded = of("cauda-equina", chart.findings_in("CAUDA_EQUINA"))
    back = back_conditions(chart)
    back += chart.past_conditions_in("SCIATICA") + chart.past_conditions_in("LOW_BACK_PAIN")
    back += chart.noted_in("SCIATICA", "historical") + chart.noted_in("LOW_BACK_PAIN", "historical")
    signs: list[Evidence] = []
    if back:
        signs += of("bladder-bowel", chart.findings_in("BLADDER_BOWEL", NEW_SIGN_DAYS))
        signs += [
            of_result("post-void-residual", r)
            for r in chart.results(PVR)[0]
            if r.value > PVR_ABOVE and r.fact.when >= chart.since(NEW_SIGN_DAYS)
        ][:1]
        signs += of("saddle-anaesthesia", chart.findings_in("SADDLE_ANAESTHESIA", NEW_SIGN_DAYS))
        signs += bilateral_sciatica(chart, NEW_SIGN_DAYS)
    if not recorded and not signs:
        return None
    evidence = recorded + signs + (of("back-condition", back) if signs else [])
    evidence += uncertain_in_note(
        chart, "CAUDA_EQUINA", "BLADDER_BOWEL", "SADDLE_ANAESTHESIA", "BILATERAL_SCIATICA"
    )
    return Finding("critical", tuple(evidence), decisive=(recorded + signs)[0])


def bilateral_sciatica(chart: Chart, within_days: int) -> list[Evidence]:
    """G57.03 and the like, or right and left sciatica both active with the second side new;
    or bilateral leg symptoms, or sciatica on each side, in the draft note."""
    found = of("bilateral-sciatica", chart.conditions_in("BILATERAL_SCIATICA", within_days))
    found += of("bilateral-sciatica", chart.observations_in("BILATERAL_SCIATICA", within_days))
    found += of("bilateral-sciatica", chart.noted_in("BILATERAL_SCIATICA"))
    noted = chart.noted_in("SCIATICA")
    right = chart.conditions_in("SCIATICA_RIGHT") + [m for m in noted if m.fact.side == "right"]
    left = chart.conditions_in("SCIATICA_LEFT") + [m for m in noted if m.fact.side == "left"]
    if right and left:
        first_right, first_left = _earliest(right), _earliest(left)
        if first_right and first_left and max(first_right, first_left) >= chart.since(within_days):
            found += of("sciatica-both-sides", right + left)
    return found


def _earliest(matches: list[Match]):
    dates = [m.fact.when for m in matches if m.fact.when is not None]
    return min(dates) if dates else None


def _bilateral(matches: list[Match]) -> bool:
    return any(
        m.fact.side == "bilateral" or any(w in m.fact.words for w in BILATERAL_WORDS)
        for m in matches
    )


@rule("motor-deficit-red-flag")
def motor_deficit_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Sciatica with foot drop or leg weakness within 30 days; critical when both feet drop or
    both legs are weak."""
    sciatica = chart.problems_in("SCIATICA")
    if not sciatica:
        return None
    foot_drop = chart.findings_in("FOOT_DROP", MOTOR_DEFICIT_DAYS)
    weakness = chart.findings_in("LEG_WEAKNESS", MOTOR_DEFICIT_DAYS)
    if not foot_drop and not weakness:
        return None
    sides = {m.fact.side for m in foot_drop + weakness}
    right = bool(chart.conditions_in("FOOT_DROP_RIGHT", MOTOR_DEFICIT_DAYS)) or "right" in sides
    left = bool(chart.conditions_in("FOOT_DROP_LEFT", MOTOR_DEFICIT_DAYS)) or "left" in sides
    bilateral = (right and left) or _bilateral(foot_drop) or _bilateral(weakness)
    deficit = of("foot-drop", foot_drop) + of("leg-weakness", weakness)
    evidence = deficit + of("sciatica", sciatica)
    evidence += uncertain_in_note(chart, "FOOT_DROP", "LEG_WEAKNESS")
    return Finding(
        "critical" if bilateral else "warning",
        tuple(evidence),
        flags=flags(bilateral=bilateral, unilateral=not bilateral),
        decisive=deficit[0],
    )


@rule("serious-pathology-red-flag")
def serious_pathology_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Back pain or sciatica with a flag of infection, cancer or (in a new episode) fracture
    risk; age over 50 is supporting evidence only."""
    back = back_conditions(chart)
    if not back:
        return None
    fever = of("fever", chart.findings_in("FEVER", FEVER_DAYS)) + measured_fever(chart)
    infection = (
        fever
        + of("injection-drug-use", chart.problems_in("INJECTION_DRUG_USE"))
        + of("opioid-use-disorder", chart.problems_in("OPIOID_USE_DISORDER"))
        + of("immunosuppression", chart.lasting_in("IMMUNOSUPPRESSION"))
    )
    cancer = of(
        "cancer-history",
        chart.lasting_in("CANCER_HISTORY") + chart.past_conditions_in("CANCER_HISTORY"),
    )
    cancer += of(
        "weight-loss",
        chart.conditions_in("WEIGHT_LOSS")
        + chart.observations_in("WEIGHT_LOSS", WEIGHT_LOSS_CODED_DAYS)
        + chart.noted_in("WEIGHT_LOSS"),
    )
    cancer += measured_weight_loss(chart)
    fracture = of("fracture-risk", chart.lasting_in("FRACTURE_RISK")) if new_episode(chart) else []
    if not (infection or cancer or fracture):
        return None
    evidence = infection + cancer + fracture
    if chart.age is not None and chart.age > OLDER_THAN:
        evidence.append(Evidence("older-than-50", values=(("age", str(chart.age)),)))
    evidence += of("back-condition", back)
    evidence += uncertain_in_note(chart, "FEVER", "WEIGHT_LOSS")
    missing = chart.results(TEMPERATURE)[1] + chart.results(WEIGHT)[1]
    return Finding(
        "warning",
        tuple(evidence),
        tuple(missing),
        flags=flags(
            infection=bool(infection),
            febrile=bool(fever),
            cancer=bool(cancer),
            fracture=bool(fracture),
            mri_with_contrast=bool(infection),
            mri_plain=bool(cancer) and not infection,
            markers=bool(infection or cancer),
            fracture_only=bool(fracture) and not (infection or cancer),
        ),
        decisive=(infection + cancer + fracture)[0],
        reasons=tuple(
            name
            for name, found in (
                ("infection", infection),
                ("cancer", cancer),
                ("fracture", fracture),
            )
            if found
        ),
    )


def measured_fever(chart: Chart) -> list[Evidence]:
    readable, _ = chart.results(TEMPERATURE)
    hot = [r for r in readable if r.value >= FEVER_AT_OR_ABOVE]
    return [of_result("measured-fever", hot[0])] if hot else []


def measured_weight_loss(chart: Chart) -> list[Evidence]:
    """The latest weight more than 5 % below the highest of the prior 12 months."""
    readable, _ = chart.results(WEIGHT)
    if len(readable) < 2:
        return []
    latest, earlier = readable[0], readable[1:]
    highest = max(earlier, key=lambda r: r.value)
    if highest.value <= 0 or (highest.value - latest.value) / highest.value <= WEIGHT_LOSS_FRACTION:
        return []
    loss = (highest.value - latest.value) / highest.value * 100
    return [
        of_result("measured-weight-loss", latest, percent=f"{loss:.1f}"),
        of_result("highest-weight", highest),
    ]
