"""Red flags that need urgent care: cauda equina syndrome, motor deficit, serious pathology."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..chart import Chart, Match
from ..labs import FEVER_AT_OR_ABOVE, TEMPERATURE, WEIGHT, WEIGHT_LOSS_FRACTION
from .base import Evidence, Finding, evidence_of

NEW_SYMPTOM_DAYS = 14
MOTOR_DEFICIT_DAYS = 30
FEVER_DAYS = 7
OLDER_THAN = 50
SADDLE_SYMPTOM_WORDS = ("numb", "anaesthe", "anesthe", "loss of sensation", "sensory loss")


def back_conditions(chart: Chart) -> list[Match]:
    """Active sciatica or low back pain: coded, or current in the draft note."""
    return chart.problems_in("SCIATICA") + chart.problems_in("LOW_BACK_PAIN")


def uncertain_in_note(chart: Chart, *groups: str) -> list[Evidence]:
    """Mentions the draft note makes uncertain ("possible numbness"): supporting evidence on a
    card that fired for other reasons, never a reason to fire."""
    return [
        e for group in groups for e in evidence_of("Supporting", chart.noted_in(group, "possible"))
    ]


def cauda_equina_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """CAUDA_EQUINA; or back pain or sciatica with new bladder/bowel, saddle or bilateral signs."""
    evidence = evidence_of("Cauda equina syndrome recorded", chart.findings_in("CAUDA_EQUINA"))
    # A past history of back pain or sciatica in the note counts here (not for other rules):
    # with new bladder, saddle or bilateral signs it is a reason to act, not to wait.
    back = (
        back_conditions(chart)
        + chart.noted_in("SCIATICA", "historical")
        + chart.noted_in("LOW_BACK_PAIN", "historical")
    )
    if back:
        new_signs = evidence_of(
            "New bladder or bowel change", chart.findings_in("BLADDER_BOWEL", NEW_SYMPTOM_DAYS)
        )
        new_signs += saddle_anaesthesia(chart, NEW_SYMPTOM_DAYS)
        new_signs += bilateral_sciatica(chart, NEW_SYMPTOM_DAYS)
        if new_signs:
            evidence += evidence_of("Back pain or sciatica", back) + new_signs
    if not evidence:
        return None
    evidence += uncertain_in_note(
        chart, "CAUDA_EQUINA", "BLADDER_BOWEL", "SADDLE_ANAESTHESIA", "BILATERAL_SCIATICA"
    )
    return Finding("cauda-equina-red-flag", "critical", tuple(evidence))


def saddle_anaesthesia(chart: Chart, within_days: int) -> list[Evidence]:
    """Saddle numbness described in a finding's text, or R20.0/R20.2 at a saddle body site."""
    sites = chart.value_set("SADDLE_SITE")
    place = re.compile("|".join(re.escape(name) for name in sites.names))
    since = chart.since(within_days)
    # A described finding is a Condition or a non-numeric Observation (not a lab or vital sign).
    findings = chart.conditions + tuple(
        o for o in chart.observations if "valueQuantity" not in o.resource
    )
    described = [
        fact
        for fact in findings
        if place.search(fact.words)
        and any(
            place.search(line) and any(word in line for word in SADDLE_SYMPTOM_WORDS)
            for line in fact.words.splitlines()
        )
    ]
    coded = [
        m.fact
        for m in chart.findings_in("SENSORY_LOSS")
        if any(sites.match(site) or sites.match_name(site) for site in m.fact.body_sites)
    ]
    found = evidence_of("Saddle anaesthesia", chart.noted_in("SADDLE_ANAESTHESIA"))
    seen = set()
    for fact in described + coded:
        if fact.reference in seen or fact.when is None or fact.when < since:
            continue
        seen.add(fact.reference)
        if chart.interpretable(fact.reference, fact.resource):
            found.append(
                Evidence(f"Saddle anaesthesia: {fact.label()}", fact.reference, date=fact.day)
            )
    return found


def bilateral_sciatica(chart: Chart, within_days: int) -> list[Evidence]:
    """G57.03, or right and left sciatica both active with the second side new; or bilateral
    leg symptoms, or sciatica on each side, in the draft note."""
    found = evidence_of(
        "Bilateral sciatica", chart.conditions_in("BILATERAL_SCIATICA", within_days)
    )
    found += evidence_of("Bilateral leg symptoms", chart.noted_in("BILATERAL_SCIATICA"))
    noted = chart.noted_in("SCIATICA")
    right = chart.conditions_in("SCIATICA_RIGHT") + [m for m in noted if m.fact.side == "right"]
    left = chart.conditions_in("SCIATICA_LEFT") + [m for m in noted if m.fact.side == "left"]
    if right and left:
        first_right, first_left = _earliest(right), _earliest(left)
        if first_right and first_left and max(first_right, first_left) >= chart.since(within_days):
            found += evidence_of("Sciatica on both sides", right + left)
    return found


def _earliest(matches: list[Match]):
    dates = [m.fact.when for m in matches if m.fact.when is not None]
    return min(dates) if dates else None


def motor_deficit_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Sciatica with foot drop or muscle weakness within 30 days (critical if both feet)."""
    sciatica = chart.problems_in("SCIATICA")
    if not sciatica:
        return None
    deficit = evidence_of("Foot drop", chart.findings_in("FOOT_DROP", MOTOR_DEFICIT_DAYS))
    deficit += evidence_of(
        "Muscle weakness", chart.findings_in("LEG_WEAKNESS", MOTOR_DEFICIT_DAYS)
    )
    if not deficit:
        return None
    noted_sides = {m.fact.side for m in chart.noted_in("FOOT_DROP")}
    right = bool(chart.conditions_in("FOOT_DROP_RIGHT")) or bool(
        {"right", "bilateral"} & noted_sides
    )
    left = bool(chart.conditions_in("FOOT_DROP_LEFT")) or bool({"left", "bilateral"} & noted_sides)
    bilateral = right and left
    evidence = evidence_of("Sciatica", sciatica) + deficit
    if bilateral:
        evidence.append(Evidence("Foot drop on both sides"))
    evidence += uncertain_in_note(chart, "FOOT_DROP", "LEG_WEAKNESS")
    return Finding(
        "motor-deficit-red-flag",
        "critical" if bilateral else "warning",
        tuple(evidence),
        flags=frozenset({"bilateral"} if bilateral else ()),
    )


def serious_pathology_red_flag(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Back pain or sciatica with a flag for cancer, infection or fracture."""
    back = back_conditions(chart)
    if not back:
        return None
    flags: dict[str, list[Evidence]] = {
        "cancer history": evidence_of("Cancer", chart.conditions_in("CANCER_HISTORY")),
        "weight loss": evidence_of(
            "Weight loss",
            chart.conditions_in("WEIGHT_LOSS")
            + chart.observations_in("WEIGHT_LOSS", 365)
            + chart.noted_in("WEIGHT_LOSS"),
        )
        + measured_weight_loss(chart),
        "fever": evidence_of("Fever", chart.findings_in("FEVER", FEVER_DAYS))
        + measured_fever(chart),
        "intravenous drug use": evidence_of("IV drug use", chart.conditions_in("INJECTION_DRUG_USE")),
        "immunosuppression": evidence_of(
            "Immunosuppression", chart.conditions_in("IMMUNOSUPPRESSION")
        ),
        "fracture risk": evidence_of("Fracture risk", chart.conditions_in("FRACTURE_RISK")),
    }
    found = {name: ev for name, ev in flags.items() if ev}
    missing: list[str] = []
    for lab in (TEMPERATURE, WEIGHT):
        missing += chart.results(lab)[1]
    if not found:
        return None
    evidence = evidence_of("Back pain or sciatica", back)
    for items in found.values():
        evidence += items
    if chart.age is not None and chart.age > OLDER_THAN:
        evidence.append(Evidence(f"Supporting: age {chart.age} (over {OLDER_THAN})"))
    evidence += uncertain_in_note(chart, "FEVER", "WEIGHT_LOSS")
    infection_or_cancer = found.keys() & {
        "cancer history",
        "weight loss",
        "fever",
        "intravenous drug use",
        "immunosuppression",
    }
    return Finding(
        "serious-pathology-red-flag",
        "warning",
        tuple(evidence),
        tuple(missing),
        flags=frozenset({"infection_or_cancer"} if infection_or_cancer else ()),
        values={"flags": ", ".join(found)},
    )


def measured_fever(chart: Chart) -> list[Evidence]:
    readable, _ = chart.results(TEMPERATURE)
    return [
        Evidence.of_result("Measured fever", r) for r in readable if r.value >= FEVER_AT_OR_ABOVE
    ][:1]


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
        Evidence(
            f"Measured weight loss of {loss:.1f} % (from {highest.shown()} on {highest.fact.day})",
            latest.fact.reference,
            value=latest.shown(),
            date=latest.fact.day,
        )
    ]
