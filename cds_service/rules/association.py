"""Whether sciatica plausibly contributes to the cramps, and how to manage it."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart
from ..labs import EGFR, EGFR_NSAID_BELOW
from .base import Evidence, Finding, evidence_of
from .other_causes import OTHER_CAUSE_RULES
from .trigger import cramp_reports

RED_FLAG_RULES = ("cauda-equina-red-flag", "motor-deficit-red-flag", "serious-pathology-red-flag")
OLDER_ADULT_AGE = 65
PEPTIC_LOOKBACK_DAYS = 365


def cramp_sciatica_association(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Active sciatica and no critical card: sciatica may contribute to the cramps."""
    sciatica = chart.problems_in("SCIATICA")
    if not sciatica or any(f.indicator == "critical" for f in prior.values()):
        return None
    evidence = evidence_of("Sciatica", sciatica)
    site = sciatic_path_site(chart)
    nerve = evidence_of("Nerve symptom", chart.findings_in("NERVE_SYMPTOM"))
    # "Possible numbness" in the note: a supporting feature is supporting evidence by nature.
    nerve += evidence_of("Nerve symptom", chart.noted_in("NERVE_SYMPTOM", "possible"))
    evidence += site + nerve
    other_causes = [prior[rule] for rule in OTHER_CAUSE_RULES if rule in prior]
    both_features = bool(site) and bool(nerve)
    flags = set()
    if site:
        flags.add("site")
    if nerve:
        flags.add("nerve")
    if other_causes:
        flags.add("other_causes")
    alternatives = ", ".join(_cause_names(other_causes))
    return Finding(
        "cramp-sciatica-association",
        "warning" if both_features and not other_causes else "info",
        tuple(evidence),
        flags=frozenset(flags),
        values={"alternatives": alternatives},
    )


def sciatic_path_site(chart: Chart) -> list[Evidence]:
    """Cramps located on the sciatic path: calf, lower leg, hamstring or foot."""
    sites = chart.value_set("SCIATIC_PATH_SITE")
    calf = chart.value_set("CALF_CRAMP")
    found = []
    for match in cramp_reports(chart):
        if calf.match(match.fact.code) is not None:
            found.append(Evidence.of_match("Cramp site on the sciatic path (calf)", match))
            continue
        for site in match.fact.body_sites:
            coding = sites.match(site)
            named = sites.match_name(site)
            if coding is not None or named is not None:
                how = f"{coding.system}|{coding.code}" if coding else f"name '{named}'"
                found.append(
                    Evidence(
                        f"Cramp site on the sciatic path: {match.fact.label()}",
                        match.fact.reference,
                        how,
                        date=match.fact.day,
                    )
                )
                break
    return found


def _cause_names(findings: list[Finding]) -> list[str]:
    names = {
        "electrolyte-cramp-cause": "low electrolytes",
        "medication-cramp-cause": "medication",
        "comorbidity-cramp-cause": "comorbidity",
    }
    return [names[f.rule_id] for f in findings]


def nsaid_contraindications(chart: Chart) -> list[Evidence]:
    """Why an NSAID should not be given (the catalog's NSAID_CONTRAINDICATION)."""
    reasons: list[Evidence] = []
    egfr, _ = chart.latest_result(EGFR)
    if egfr is not None and egfr.value < EGFR_NSAID_BELOW:
        reasons.append(Evidence.of_result(f"eGFR below {EGFR_NSAID_BELOW:g}", egfr))
    reasons += evidence_of("Severe kidney disease", chart.conditions_in("CKD_SEVERE"))
    reasons += evidence_of("Pregnancy", chart.conditions_in("PREGNANCY"))
    reasons += [
        Evidence.of_medication("Anticoagulant", m, how)
        for m, how in chart.medications_in("ANTICOAGULANT")
    ]
    reasons += evidence_of("Heart failure", chart.conditions_in("HEART_FAILURE"))
    reasons += evidence_of(
        "Peptic ulcer or GI bleeding",
        chart.conditions_in("GI_ULCER_BLEED")
        + chart.past_conditions_in("GI_ULCER_BLEED", PEPTIC_LOOKBACK_DAYS),
    )
    return reasons


def sciatica_management(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """The association card fired and no red flag did: the conservative plan."""
    if "cramp-sciatica-association" not in prior or any(r in prior for r in RED_FLAG_RULES):
        return None
    flags = set()
    evidence: list[Evidence] = []
    if chart.age is not None and chart.age >= OLDER_ADULT_AGE:
        flags.add("older_adult")
        evidence.append(Evidence(f"Age {chart.age}: skeletal muscle relaxants best avoided"))
    blocked = nsaid_contraindications(chart)
    on_nsaid = chart.medications_in("NSAID")
    values = {}
    if blocked:
        flags.add("nsaid_blocked")
        values["nsaid_blocked_by"] = "; ".join(e.what for e in blocked)
        evidence += blocked
    elif on_nsaid:
        flags.add("nsaid_active")
        evidence += [Evidence.of_medication("Already on an NSAID", m, h) for m, h in on_nsaid]
    else:
        flags.add("nsaid_ok")
    return Finding(
        "sciatica-management", "info", tuple(evidence), flags=frozenset(flags), values=values
    )
