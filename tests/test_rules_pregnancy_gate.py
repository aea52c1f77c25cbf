"""`pregnancy` (rules/episode.py) returns at once when the chart has none of the groups it reads
(Chart.has_any): the answer must be the one its questions would give, with or without records
in those groups, coded as Conditions or Observations, current or past, dated or not."""

from __future__ import annotations

import pytest
from test_chart import ICD10CM, SNOMED, chart_of, condition, day, observation

from cds_service.chart import Chart
from cds_service.rules.episode import PREGNANCY_GROUPS, pregnancy

PREGNANT = {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]}

RECORDS = {
    "nothing": [],
    "pregnancy coded": [condition(code="Z34.00")],
    "pregnancy, resolved": [condition(code="Z34.00", clinical="resolved")],
    "pregnancy episode": [condition(code="O21.0")],
    "pregnancy episode, old": [condition(code="O21.0", onsetDateTime=day(400))],
    "status pregnant": [observation(loinc="82810-3", value=None, valueCodeableConcept=PREGNANT)],
    "status not pregnant": [
        observation(loinc="82810-3", value=None, valueCodeableConcept={"text": "Not pregnant"})
    ],
    "delivery date ahead": [observation(loinc="11778-8", value=None, valueDateTime=day(-90))],
    "gestational age": [observation(loinc="11884-4", value=20, unit="wk")],
    "unrelated": [condition(code="M54.31", system=ICD10CM), observation(loinc="2823-3")],
}


def ungated(chart: Chart) -> list:
    """What `pregnancy` answers when every question is asked."""
    original = Chart.has_any
    try:
        Chart.has_any = lambda self, groups: True
        return pregnancy(chart)
    finally:
        Chart.has_any = original


@pytest.mark.parametrize("name", list(RECORDS))
def test_gate_never_changes_the_answer(name):
    chart = chart_of(*RECORDS[name])
    assert pregnancy(chart) == ungated(chart)


def test_gate_opens_for_each_group_it_reads():
    expected = {"pregnancy coded", "pregnancy episode", "status pregnant", "delivery date ahead"}
    expected |= {"gestational age"}
    assert {name for name, records in RECORDS.items() if pregnancy(chart_of(*records))} == expected
    for name in ("pregnancy, resolved", "pregnancy episode, old", "status not pregnant"):
        assert chart_of(*RECORDS[name]).has_any(PREGNANCY_GROUPS)
    assert not chart_of(*RECORDS["unrelated"]).has_any(PREGNANCY_GROUPS)


class _Asking:
    """A chart that notes every group `pregnancy` asks it about, with the gate open."""

    def __init__(self, chart: Chart) -> None:
        self._chart, self.asked = chart, set()

    def has_any(self, groups) -> bool:
        return True

    def __getattr__(self, name):
        value = getattr(self._chart, name)
        if not callable(value):
            return value

        def asking(*args, **kwargs):
            self.asked |= {a for a in args if isinstance(a, str) and a.isupper()}
            return value(*args, **kwargs)

        return asking


@pytest.mark.parametrize("name", list(RECORDS))
def test_the_gate_lists_every_group_pregnancy_asks_about(name):
    """A group added to `pregnancy` and not to PREGNANCY_GROUPS would be skipped silently on
    nearly every chart: the gate must name every group it asks about."""
    chart = _Asking(chart_of(*RECORDS[name]))
    pregnancy(chart)  # type: ignore[arg-type]
    assert chart.asked, "no group asked: the recorder no longer sees the questions"
    assert chart.asked <= PREGNANCY_GROUPS
