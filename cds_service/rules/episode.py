"""Shared clinical questions several rules ask: the back condition, the episode, pregnancy."""

from __future__ import annotations

from datetime import datetime

from ..chart import Chart, Match
from ..fhirdates import parse
from ..terminology import coding_list, concept_text
from .base import Evidence, of

NEW_EPISODE_DAYS = 42  # six weeks
PREGNANCY_EPISODE_DAYS = 300
DELIVERY_PAST_DAYS = 42  # an estimated delivery date up to 6 weeks past still counts
PREGNANT_CODES = {"77386006"}  # SNOMED Pregnant (a pregnancy status answer)
# Every group `pregnancy` reads.
PREGNANCY_GROUPS = frozenset(
    {"PREGNANCY", "PREGNANCY_EPISODE", "PREGNANCY_STATUS", "DELIVERY_DATE", "GESTATIONAL_AGE"}
)


def back_conditions(chart: Chart) -> list[Match]:
    """Active sciatica or low back pain: coded, or current in the draft note."""
    return chart.problems_in("SCIATICA") + chart.problems_in("LOW_BACK_PAIN")


def episode_onset(chart: Chart) -> Match | None:
    """The onset of the most recently started active sciatica; without one, of the most
    recently started active low back pain (coded Conditions with a date). Asked five times a
    request (three rules and `new_episode`): worked out once per chart."""
    return chart.once("episode-onset", _episode_onset)  # type: ignore[return-value]


def _episode_onset(chart: Chart) -> Match | None:
    for group in ("SCIATICA", "LOW_BACK_PAIN"):
        dated = [m for m in chart.conditions_in(group) if m.fact.when is not None]
        if dated:
            return max(dated, key=lambda m: m.fact.when)
    return None


def new_episode(chart: Chart) -> bool | None:
    """Whether the episode began under six weeks ago; None when no onset is recorded."""
    onset = episode_onset(chart)
    if onset is None:
        return None
    return onset.fact.when > chart.since(NEW_EPISODE_DAYS)


def pregnancy(chart: Chart) -> list[Evidence]:
    """PREGNANCY coded or noted; an O20-O48 code within 300 days; a pregnancy status of
    pregnant; an estimated delivery date ahead (or up to 6 weeks past); a gestational age
    recorded within 300 days."""
    if not chart.has_any(PREGNANCY_GROUPS):  # asked twice a request; nearly always absent
        return []
    found = of("pregnancy", chart.problems_in("PREGNANCY"))
    found += of("pregnancy", chart.conditions_in("PREGNANCY_EPISODE", PREGNANCY_EPISODE_DAYS))
    for match in chart.observations_coded("PREGNANCY_STATUS", PREGNANCY_EPISODE_DAYS):
        value = match.fact.resource.get("valueCodeableConcept")
        codes = {c.get("code") for c in coding_list(value) if isinstance(c, dict)}
        text = concept_text(value).strip().lower()
        if codes & PREGNANT_CODES or text == "pregnant":
            found.append(Evidence("pregnancy-status", match=match))
    for match in chart.observations_coded("DELIVERY_DATE", 365):
        due = _due(match.fact.resource)
        if due is not None and due >= chart.since(DELIVERY_PAST_DAYS):
            found.append(
                Evidence("delivery-date", match=match, values=(("due", due.date().isoformat()),))
            )
    found += of(
        "gestational-age", chart.observations_coded("GESTATIONAL_AGE", PREGNANCY_EPISODE_DAYS)
    )
    return found


def _due(resource: dict) -> datetime | None:
    return parse(resource.get("valueDateTime"))
