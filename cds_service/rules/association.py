"""Whether sciatica plausibly contributes to the cramps, and how to manage it."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart, Match
from .base import CHART_HOOKS, Evidence, Finding, flags, of, rule
from .episode import episode_onset, new_episode
from .nsaid_safety import OLDER_ADULT_AGE, cautions, contraindications
from .other_causes import OTHER_CAUSE_RULES, fluid_advice
from .red_flags import RED_FLAG_RULES
from .trigger import CONDITION_LOOKBACK_DAYS, CRAMP, OBSERVATION_LOOKBACK_DAYS

NOTE_SITES_ON_PATH = {"calf", "hamstring", "thigh", "foot"}


@rule("cramp-sciatica-association", hooks=CHART_HOOKS)
def cramp_sciatica_association(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Active sciatica and no critical card: sciatica may contribute to the cramps."""
    sciatica = chart.problems_in("SCIATICA")
    if not sciatica or any(f.indicator == "critical" for f in prior.values()):
        return None
    site = of("cramp-site", sciatic_path_cramps(chart))
    nerve = of("nerve-symptom", chart.findings_in("NERVE_SYMPTOM"))
    # "Possible numbness" in the note: a supporting feature is supporting evidence by nature.
    nerve += of("nerve-symptom", chart.noted_in("NERVE_SYMPTOM", "possible"))
    causes = tuple(rule_id for rule_id in OTHER_CAUSE_RULES if rule_id in prior)
    both = bool(site) and bool(nerve)
    return Finding(
        "warning" if both and not causes else "info",
        tuple(of("sciatica", sciatica) + site + nerve),
        flags=flags(site=bool(site), nerve=bool(nerve), other_causes=bool(causes)),
        decisive=Evidence("sciatica", match=sciatica[0]),
        reasons=causes,
    )


def sciatic_path_cramps(chart: Chart) -> list[Match]:
    """Reported cramps located on the sciatic path: calf, lower leg, hamstring or foot (by a
    calf cramp code, a body site, or the site the note names)."""
    calf = {m.fact.reference for m in chart.conditions_in("CALF_CRAMP")}
    calf |= {m.fact.reference for m in chart.observations_in("CALF_CRAMP")}
    reports = chart.conditions_in(CRAMP, CONDITION_LOOKBACK_DAYS) + chart.observations_in(
        CRAMP, OBSERVATION_LOOKBACK_DAYS
    )
    found = [
        m
        for m in reports
        if m.fact.reference in calf or "SCIATIC_PATH_SITE" in chart.sites_of(m.fact)
    ]
    found += [
        m
        for m in chart.noted_in(CRAMP)
        if m.fact.finding is not None and m.fact.finding.site in NOTE_SITES_ON_PATH
    ]
    return found


@rule("sciatica-management", hooks=CHART_HOOKS)
def sciatica_management(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """The association card fired and no red flag did: the conservative plan, fitted to the
    episode, with an NSAID offered in one click only when none of its contraindications or
    cautions is present."""
    if "cramp-sciatica-association" not in prior or any(r in prior for r in RED_FLAG_RULES):
        return None
    blocked = contraindications(chart)
    careful = cautions(chart)
    new = new_episode(chart)
    onset = episode_onset(chart)
    evidence: list[Evidence] = []
    if onset is not None:
        evidence.append(Evidence("episode-onset", match=onset))
    evidence += blocked + careful
    older = chart.age is not None and chart.age >= OLDER_ADULT_AGE
    return Finding(
        "info",
        tuple(evidence),
        flags=flags(
            new_episode=new is True,
            long_episode=new is False,
            episode_unknown=new is None,
            older_adult=older,
            younger_adult=not older,
            nsaid_blocked=bool(blocked),
            nsaid_caution=bool(careful) and not blocked,
            nsaid_ok=not blocked and not careful,
            **fluid_advice(chart),
        ),
        reasons=tuple(dict.fromkeys(e.label for e in blocked + careful)),
    )
