"""`episode_onset` (rules/episode.py) is worked out once per chart (Chart.once) and remembered:
the remembered answer must be the one working it out afresh gives, for sciatica, low back pain,
both, undated ones and none, and asking again must not change it."""

from __future__ import annotations

import pytest
from test_chart import chart_of, condition, day

from cds_service.rules.episode import _episode_onset, episode_onset, new_episode

RECORDS = {
    "nothing": [],
    "sciatica": [condition(code="M54.31", onsetDateTime=day(10))],
    "two sciaticas": [
        condition("c1", code="M54.31", onsetDateTime=day(100)),
        condition("c2", code="M54.32", onsetDateTime=day(5)),
    ],
    "low back pain": [condition(code="M54.50", onsetDateTime=day(60))],
    "both": [
        condition("c1", code="M54.50", onsetDateTime=day(3)),
        condition("c2", code="M54.31", onsetDateTime=day(90)),
    ],
    "undated sciatica": [condition(code="M54.31")],
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_remembered_onset_is_the_worked_out_one(name):
    chart = chart_of(*RECORDS[name])
    fresh = _episode_onset(chart_of(*RECORDS[name]))
    for _ in range(3):  # the first asking works it out, the others read the memo
        assert episode_onset(chart) == fresh
    assert new_episode(chart) == (None if fresh is None else fresh.fact.when > chart.since(42))


def test_each_chart_has_its_own_answer():
    old, new = chart_of(*RECORDS["low back pain"]), chart_of(*RECORDS["sciatica"])
    assert new_episode(old) is False
    assert new_episode(new) is True
    assert episode_onset(old) != episode_onset(new)
