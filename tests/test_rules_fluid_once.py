"""`fluid_advice` (rules/other_causes.py) is worked out once per chart (Chart.once) and shared
by two rules: the remembered answer must be the freshly worked-out one for low or normal sodium,
with or without a diuretic, and each chart must get its own."""

from __future__ import annotations

import pytest
from test_chart import RXNORM, chart_of, medication_request, observation

from cds_service.rules.other_causes import _fluid_advice, fluid_advice

DIURETIC = medication_request(
    medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "4603"}], "text": "furosemide"}
)
RECORDS = {
    "nothing": [],
    "low sodium": [observation(loinc="2951-2", value=125)],
    "normal sodium": [observation(loinc="2951-2", value=140)],
    "diuretic": [DIURETIC],
    "low sodium and diuretic": [observation(loinc="2951-2", value=125), DIURETIC],
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_remembered_advice_is_the_worked_out_one(name):
    chart = chart_of(*RECORDS[name])
    fresh = _fluid_advice(chart_of(*RECORDS[name]))
    for _ in range(2):
        assert fluid_advice(chart) == fresh


def test_each_chart_has_its_own_advice():
    assert fluid_advice(chart_of())["fluids_ok"] is True
    assert fluid_advice(chart_of(*RECORDS["low sodium"]))["no_fluids_low_sodium"] is True
    assert fluid_advice(chart_of(*RECORDS["diuretic"]))["no_fluids_diuretic"] is True
