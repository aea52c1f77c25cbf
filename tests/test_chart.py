"""The chart built from raw FHIR JSON: what counts, its date, lab values in canonical units and
how they are classified (CLINICAL_RULES.md, "Conventions"). Now is pinned.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from cds_service import labs, terminology
from cds_service.cards import unreadable_line
from cds_service.chart import Chart, Fact, build_chart
from cds_service.gather import Gathered
from cds_service.terminology import ICD10CM, LOINC, RXNORM, SNOMED

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
PID = "p1"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0136 = "http://terminology.hl7.org/CodeSystem/v2-0136"


def chart_of(*resources: dict, hook: str = "patient-view", context: dict | None = None) -> Chart:
    gathered = Gathered()
    gathered.add([{"resourceType": "Patient", "id": PID, "birthDate": "1970-01-01"}])
    gathered.add(list(resources))
    return build_chart(
        hook, {"patientId": PID, **(context or {})}, gathered, terminology.load(), NOW
    )


def day(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).date().isoformat()


def condition(
    cid: str = "c1",
    code: str = "M54.31",
    system: str = ICD10CM,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    **fields,
) -> dict:
    resource = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": day(20),
    }
    if clinical:
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    if verification:
        resource["verificationStatus"] = {
            "coding": [{"system": VERIFICATION, "code": verification}]
        }
    resource.update(fields)
    return {k: v for k, v in resource.items() if v is not None}


def observation(
    oid: str = "o1",
    loinc: str = "2823-3",
    value: float | None = 4.2,
    unit: str = "mmol/L",
    days_ago: float = 10,
    **fields,
) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z"),
    }
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    resource.update(fields)
    return {k: v for k, v in resource.items() if v is not None}


def medication_request(mid: str = "m1", status: str = "active", **fields) -> dict:
    resource = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": day(30),
    }
    resource.update(fields)
    return resource


def quantity_range(low=None, high=None, unit="mmol/L") -> list[dict]:
    entry = {}
    if low is not None:
        entry["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
    if high is not None:
        entry["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
    return [entry]


def flagged(code: str) -> list[dict]:
    return [{"coding": [{"system": INTERPRETATION, "code": code}]}]


def references(matches) -> list[str]:
    return [m.fact.reference for m in matches]


def only(matches) -> Fact:
    """The one record a query found (the chart holds a Condition only in its groups)."""
    (match,) = matches
    return match.fact


def nothing_classified(chart: Chart) -> bool:
    """No record of the chart counts in any concept group: no Condition (current or past), no
    finding, no lab result or unreadable lab, no medication."""
    return not (
        chart.current
        or chart.past
        or chart.findings
        or chart.coded_observations
        or chart.lab_results
        or chart.lab_unreadable
        or chart.medications
    )


def lines(chart: Chart, unreadable=None) -> list[str]:
    """What could not be read, as the card detail words it."""
    items = chart.unreadable if unreadable is None else unreadable
    return [unreadable_line(item, chart) for item in items]


def shown(days_ago: float) -> str:
    """A date as cards show it ("17 Nov")."""
    moment = NOW - timedelta(days=days_ago)
    return f"{moment.day} {moment.strftime('%b')}"


# --- Condition status -----------------------------------------------------------------------


@pytest.mark.parametrize("clinical", ["active", "recurrence", "relapse", None])
def test_condition_counts_when_active_recurrent_relapsed_or_without_status(clinical):
    chart = chart_of(condition(clinical=clinical))
    assert references(chart.conditions_in("SCIATICA")) == ["Condition/c1"]
    assert chart.past_conditions_in("SCIATICA") == []


@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_resolved_or_inactive_condition_is_past_not_current(clinical):
    chart = chart_of(condition(clinical=clinical))
    assert chart.conditions_in("SCIATICA") == []
    assert references(chart.past_conditions_in("SCIATICA")) == ["Condition/c1"]


@pytest.mark.parametrize("verification", ["unconfirmed", "provisional", "differential", None])
def test_condition_not_yet_confirmed_still_counts(verification):
    chart = chart_of(condition(verification=verification))
    assert references(chart.conditions_in("SCIATICA")) == ["Condition/c1"]


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [
        ("active", "refuted"),
        ("resolved", "refuted"),
        (None, "refuted"),
        ("active", "entered-in-error"),
        ("inactive", "entered-in-error"),
        (None, "entered-in-error"),
    ],
)
def test_refuted_or_entered_in_error_condition_never_counts_not_even_as_past(
    clinical, verification
):
    chart = chart_of(condition(clinical=clinical, verification=verification))
    assert chart.conditions_in("SCIATICA") == []
    assert chart.past_conditions_in("SCIATICA") == []
    assert chart.current == {} and chart.past == {}  # in no concept group at all


# --- Condition date -------------------------------------------------------------------------


def test_condition_date_is_its_onset_rather_than_when_recorded():
    chart = chart_of(condition(onsetDateTime=day(100), recordedDate=day(5), code="R25.2"))
    assert only(chart.conditions_in("CRAMP")).day == day(100)
    assert chart.conditions_in("CRAMP", within_days=90) == []  # onset decides the lookback


def test_condition_without_onset_is_dated_when_recorded():
    chart = chart_of(condition(onsetDateTime=None, recordedDate=day(5), code="R25.2"))
    assert only(chart.conditions_in("CRAMP")).day == day(5)
    assert references(chart.conditions_in("CRAMP", within_days=90)) == ["Condition/c1"]


def test_condition_onset_period_is_dated_by_its_start():
    period = {"start": day(50), "end": day(1)}
    chart = chart_of(condition(onsetDateTime=None, onsetPeriod=period, recordedDate=day(2)))
    assert only(chart.conditions_in("SCIATICA")).day == day(50)


def test_condition_with_an_onset_that_is_not_a_date_falls_back_to_when_recorded():
    chart = chart_of(condition(onsetDateTime=None, onsetString="last spring", recordedDate=day(3)))
    assert only(chart.conditions_in("SCIATICA")).day == day(3)


def test_undated_condition_counts_but_not_within_a_lookback():
    chart = chart_of(condition(onsetDateTime=None, code="R25.2"))
    assert only(chart.conditions_in("CRAMP")).when is None
    assert references(chart.conditions_in("CRAMP")) == ["Condition/c1"]
    assert chart.conditions_in("CRAMP", within_days=90) == []
    assert lines(chart) == []  # no date is not an unreadable one


def test_a_condition_whose_date_cannot_be_read_is_named_and_not_in_a_lookback():
    chart = chart_of(condition(code="R25.2", onsetDateTime="yesterday"))
    assert chart.conditions_in("CRAMP", within_days=90) == []
    assert references(chart.conditions_in("CRAMP")) == ["Condition/c1"]
    assert lines(chart) == ["Condition ICD-10-CM R25.2: no readable date, not interpretable"]


# --- Partial dates and time zones -----------------------------------------------------------


@pytest.mark.parametrize(
    ("onset", "first_instant"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-02", datetime(2024, 5, 2, tzinfo=UTC)),
    ],
)
def test_partial_date_stands_for_its_first_instant(onset, first_instant):
    chart = chart_of(condition(onsetDateTime=onset))
    assert only(chart.conditions_in("SCIATICA")).when == first_instant
    assert references(chart.conditions_in("SCIATICA")) == ["Condition/c1"]


def test_partial_dates_are_placed_in_the_lookback_by_their_first_instant():
    # Lookback 90 days from 2026-11-20T12:00Z starts 2026-08-22T12:00Z.
    recent = chart_of(condition(code="R25.2", onsetDateTime="2026-09"))
    year_only = chart_of(condition(code="R25.2", onsetDateTime="2026"))
    assert references(recent.conditions_in("CRAMP", within_days=90)) == ["Condition/c1"]
    assert year_only.conditions_in("CRAMP", within_days=90) == []


@pytest.mark.parametrize(
    ("onset", "utc"),
    [
        ("2026-08-22T13:00:00Z", datetime(2026, 8, 22, 13, tzinfo=UTC)),
        ("2026-08-22T13:00:00+00:00", datetime(2026, 8, 22, 13, tzinfo=UTC)),
        ("2026-08-22T13:00:00+02:00", datetime(2026, 8, 22, 11, tzinfo=UTC)),
        ("2026-08-22T08:30:00-05:00", datetime(2026, 8, 22, 13, 30, tzinfo=UTC)),
        ("2026-08-22T13:00:00.250Z", datetime(2026, 8, 22, 13, tzinfo=UTC)),
    ],
)
def test_a_time_zone_is_honoured(onset, utc):
    chart = chart_of(condition(code="R25.2", onsetDateTime=onset))
    assert only(chart.conditions_in("CRAMP")).when == utc
    # The 90-day lookback starts at 2026-08-22T12:00Z: the zone decides whether it counts.
    counts = bool(chart.conditions_in("CRAMP", within_days=90))
    assert counts == (utc >= NOW - timedelta(days=90))


def test_a_time_without_a_zone_is_read_as_utc_and_the_condition_counts():
    # FHIR requires a zone when a time is given, but the chart reads dates itself: a missing zone
    # is read as UTC rather than hiding the condition (a red flag must not be missed for it).
    chart = chart_of(condition(code="R25.2", onsetDateTime="2026-11-19T10:00:00"))
    assert only(chart.conditions_in("CRAMP")).when == datetime(2026, 11, 19, 10, tzinfo=UTC)
    assert references(chart.conditions_in("CRAMP", within_days=90)) == ["Condition/c1"]


def test_a_malformed_field_the_rules_never_read_does_not_hide_a_red_flag():
    note = [{"text": "Seen in ED", "time": "2026-11-17T10:00"}]
    chart = chart_of(condition(code="G83.4", onsetDateTime=day(3), note=note))
    assert references(chart.conditions_in("CAUDA_EQUINA")) == ["Condition/c1"]


def test_a_malformed_field_the_rules_read_is_named_and_not_used():
    # Named by what it is and its date, never by its resource id (catalog v2, card wording).
    named = condition(code="G83.4", onsetDateTime=day(3), bodySite="calf")
    named["code"]["text"] = "Cauda equina syndrome"
    chart = chart_of(named)
    assert chart.conditions_in("CAUDA_EQUINA") == []
    assert lines(chart) == [
        f"Cauda equina syndrome ({shown(3)}): not valid FHIR R4 at bodySite, not interpretable"
    ]


def test_a_malformed_record_without_a_name_is_named_by_its_code():
    chart = chart_of(condition(code="G83.4", onsetDateTime=day(3), bodySite="calf"))
    assert chart.conditions_in("CAUDA_EQUINA") == []
    (line,) = lines(chart)
    assert line.startswith("Condition ICD-10-CM G83.4 (") and "not interpretable" in line
    assert "c1" not in line


# --- Observation status and date ------------------------------------------------------------


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "preliminary"])
def test_observation_counts_when_final_amended_corrected_or_preliminary(status):
    readable, _ = chart_of(observation(status=status)).results(labs.POTASSIUM)
    assert [r.fact.reference for r in readable] == ["Observation/o1"]


@pytest.mark.parametrize("status", ["registered", "cancelled", "entered-in-error", "unknown"])
def test_observation_does_not_count_when_not_resulted(status):
    chart = chart_of(observation(status=status))
    assert nothing_classified(chart)
    assert chart.results(labs.POTASSIUM) == ([], [])


def latest_potassium(resource: dict):
    result, unreadable = chart_of(resource).latest_result(labs.POTASSIUM)
    assert unreadable == [] and result is not None
    return result


def test_observation_date_is_its_effective_date_time_rather_than_issued():
    o = observation(effectiveDateTime="2026-11-01T08:00:00Z", issued="2026-11-03T09:00:00Z")
    assert latest_potassium(o).fact.when == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_observation_period_is_dated_by_its_start():
    period = {"start": "2026-11-01T08:00:00Z", "end": "2026-11-02T08:00:00Z"}
    o = observation(effectiveDateTime=None, effectivePeriod=period)
    assert latest_potassium(o).fact.when == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_observation_without_effective_is_dated_when_issued():
    o = observation(effectiveDateTime=None, issued="2026-11-03T09:15:00Z")
    assert latest_potassium(o).fact.when == datetime(2026, 11, 3, 9, 15, tzinfo=UTC)


def test_observation_date_decides_the_lab_lookback():
    inside = observation("in", value=3.0, days_ago=89)
    outside = observation("out", value=3.0, days_ago=91)
    readable, _ = chart_of(inside, outside).results(labs.POTASSIUM)
    assert [r.fact.reference for r in readable] == ["Observation/in"]


def test_latest_result_is_the_newest_within_the_lookback():
    older = observation("older", value=3.0, days_ago=20)
    newer = observation("newer", value=4.1, days_ago=2)
    result, _ = chart_of(older, newer).latest_result(labs.POTASSIUM)
    assert result.fact.reference == "Observation/newer" and not result.is_low()


# --- Units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lab", "loinc", "value", "unit", "canonical"),
    [
        (labs.POTASSIUM, "2823-3", 3.4, "mmol/L", 3.4),
        (labs.POTASSIUM, "2823-3", 3.4, "mEq/L", 3.4),
        (labs.POTASSIUM, "6298-4", 3.4, "meq/L", 3.4),
        (labs.SODIUM, "2951-2", 134, "mEq/L", 134),
        (labs.SODIUM, "2947-0", 134, "mmol/L", 134),
        (labs.CALCIUM_TOTAL, "17861-6", 8.4, "mg/dL", 8.4),
        (labs.CALCIUM_TOTAL, "17861-6", 2.05, "mmol/L", 2.05 * 4.008),
        (labs.CALCIUM_TOTAL, "17861-6", 4.1, "mEq/L", 2.05 * 4.008),
        (labs.CALCIUM_CORRECTED, "29265-6", 2.05, "mmol/L", 2.05 * 4.008),
        (labs.MAGNESIUM, "19123-9", 1.58, "mg/dL", 1.58),
        (labs.MAGNESIUM, "2601-3", 0.65, "mmol/L", 0.65 * 2.4305),
        (labs.MAGNESIUM, "19123-9", 1.3, "mEq/L", 0.65 * 2.4305),
        (labs.TEMPERATURE, "8310-5", 38.2, "Cel", 38.2),
        (labs.TEMPERATURE, "8310-5", 101.2, "[degF]", (101.2 - 32) * 5 / 9),
        (labs.TEMPERATURE, "8310-5", 100.4, "[degF]", 38.0),
        (labs.WEIGHT, "29463-7", 80, "kg", 80),
        (labs.WEIGHT, "29463-7", 176.4, "[lb_av]", 176.4 * 0.45359237),
        (labs.EGFR, "33914-3", 25, "mL/min/{1.73_m2}", 25),
        (labs.TSH, "3016-3", 7.2, "m[IU]/L", 7.2),
    ],
    ids=lambda v: v.name if isinstance(v, labs.Lab) else str(v),
)
def test_lab_value_is_converted_to_the_threshold_unit(lab, loinc, value, unit, canonical):
    chart = chart_of(observation(loinc=loinc, value=value, unit=unit, days_ago=2))
    result, unreadable = chart.latest_result(lab)
    assert unreadable == []
    assert result.value == pytest.approx(canonical, rel=1e-9)


@pytest.mark.parametrize(
    ("lab", "loinc", "value", "unit"),
    [
        (labs.POTASSIUM, "2823-3", 3.0, "mg"),
        (labs.SODIUM, "2951-2", 130, "g/L"),
        (labs.CALCIUM_TOTAL, "17861-6", 2.0, "mmol"),
        (labs.MAGNESIUM, "19123-9", 0.6, "umol/L"),
        (labs.TEMPERATURE, "8310-5", 310, "K"),
        (labs.WEIGHT, "29463-7", 12, "[stone_av]"),
    ],
    ids=lambda v: v.name if isinstance(v, labs.Lab) else str(v),
)
def test_unconvertible_unit_is_reported_not_interpretable_and_not_used(lab, loinc, value, unit):
    chart = chart_of(observation(loinc=loinc, value=value, unit=unit, days_ago=2))
    result, unreadable = chart.latest_result(lab)
    assert result is None
    assert len(unreadable) == 1
    (line,) = lines(chart, unreadable)
    # Named by the analyte (the record has no name of its own), its value, unit and date.
    assert line == f"{lab.name} {value:g} {unit} ({shown(2)}): unit not interpretable, not used"
    assert "Observation/o1" not in line


def test_an_unreadable_newer_result_does_not_hide_an_older_readable_one():
    newer = observation("newer", value=2.0, unit="mg", days_ago=1)  # would look low if guessed
    older = observation("older", value=4.0, unit="mmol/L", days_ago=20)
    chart = chart_of(newer, older)
    result, unreadable = chart.latest_result(labs.POTASSIUM)
    assert result.fact.reference == "Observation/older" and not result.is_low()
    assert lines(chart, unreadable) == [
        f"potassium 2 mg ({shown(1)}): unit not interpretable, not used"
    ]


def test_a_lab_without_a_number_is_not_interpretable():
    o = observation(value=None, valueString="haemolysed")
    o["code"]["text"] = "Potassium, serum"
    chart = chart_of(o)
    result, unreadable = chart.latest_result(labs.POTASSIUM)
    assert result is None
    assert lines(chart, unreadable) == [
        f"Potassium, serum ({shown(10)}): no numeric value, not interpretable"
    ]


def test_result_is_shown_with_its_unit_as_a_clinician_writes_it_and_as_recorded():
    from cds_service.cards import lab_text

    result, _ = chart_of(observation(loinc="2601-3", value=0.65)).latest_result(labs.MAGNESIUM)
    assert lab_text(result) == "Magnesium 1.6 mg/dL (0.65 mmol/L)"
    result, _ = chart_of(observation(value=3.4)).latest_result(labs.POTASSIUM)
    assert lab_text(result) == "Potassium 3.4 mmol/L"
    # Recorded precision is kept: 2.99 is not rounded up to the 3.0 threshold.
    result, _ = chart_of(observation(value=2.99)).latest_result(labs.POTASSIUM)
    assert lab_text(result) == "Potassium 2.99 mmol/L"
    result, _ = chart_of(observation(value=3)).latest_result(labs.POTASSIUM)
    assert lab_text(result) == "Potassium 3.0 mmol/L"
    # A spelling of the same unit is not repeated as recorded (no UCUM braces in a card).
    result, _ = chart_of(observation(value=3.4, unit="mEq/L")).latest_result(labs.POTASSIUM)
    assert lab_text(result) == "Potassium 3.4 mEq/L"
    egfr = observation(loinc="33914-3", value=45, unit="mL/min/{1.73_m2}")
    result, _ = chart_of(egfr).latest_result(labs.EGFR)
    assert lab_text(result) == "eGFR 45 mL/min/1.73 m²"
    fever = observation(loinc="8310-5", value=101.2, unit="[degF]", days_ago=1)
    result, _ = chart_of(fever).latest_result(labs.TEMPERATURE)
    assert lab_text(result) == "Temperature 38.4 °C (101.2 °F)"


# --- Low and high: interpretation, then reference range, then the fixed threshold ----------


@pytest.mark.parametrize(
    ("value", "fields", "low"),
    [
        (3.4, {}, True),  # fixed threshold 3.5
        (3.5, {}, False),
        (3.3, {"interpretation": flagged("N")}, False),  # interpretation beats threshold
        (3.6, {"interpretation": flagged("L")}, True),
        (3.6, {"interpretation": flagged("LL")}, True),
        (3.3, {"interpretation": flagged("H")}, False),
        (3.3, {"referenceRange": quantity_range(3.0, 5.1)}, False),  # range beats threshold
        (3.6, {"referenceRange": quantity_range(3.8, 5.1)}, True),
        (3.3, {"interpretation": flagged("N"), "referenceRange": quantity_range(3.5)}, False),
        (3.6, {"interpretation": flagged("L"), "referenceRange": quantity_range(3.0)}, True),
        (3.3, {"interpretation": flagged("A")}, True),  # A does not decide: threshold does
    ],
)
def test_interpretation_beats_reference_range_beats_fixed_threshold(value, fields, low):
    result, _ = chart_of(observation(value=value, **fields)).latest_result(labs.POTASSIUM)
    assert result.is_low() is low


def test_reference_range_in_another_unit_is_converted_before_comparing():
    # 8.4 mg/dL against a range low of 2.0 mmol/L (8.016 mg/dL): not low.
    o = observation(loinc="17861-6", value=8.4, unit="mg/dL", referenceRange=quantity_range(2.0))
    result, _ = chart_of(o).latest_result(labs.CALCIUM_TOTAL)
    assert result.range_low == pytest.approx(8.016)
    assert not result.is_low()


@pytest.mark.parametrize(
    ("value", "fields", "high"),
    [
        (4.6, {}, True),  # fixed threshold 4.5
        (4.5, {}, False),
        (5.0, {"interpretation": flagged("N")}, False),
        (4.0, {"interpretation": flagged("H")}, True),
        (5.0, {"referenceRange": quantity_range(0.4, 6.0, "mIU/L")}, False),
        (4.0, {"referenceRange": quantity_range(0.4, 3.5, "mIU/L")}, True),
    ],
)
def test_tsh_high_follows_interpretation_then_range_then_threshold(value, fields, high):
    o = observation(loinc="3016-3", value=value, unit="mIU/L", days_ago=30, **fields)
    result, _ = chart_of(o).latest_result(labs.TSH)
    assert result.is_high() is high


# --- Another patient ------------------------------------------------------------------------


def test_resources_about_another_patient_are_ignored():
    other = {"reference": "Patient/p2"}
    chart = chart_of(
        condition(subject=other),
        observation(subject=other),
        medication_request(subject=other, medicationCodeableConcept={"text": "furosemide"}),
    )
    assert nothing_classified(chart)
    assert lines(chart) == ["3 resource(s) about another patient: not used"]


def test_a_patient_whose_id_starts_like_ours_is_another_patient():
    chart = chart_of(condition(subject={"reference": "Patient/p10"}))
    assert nothing_classified(chart)


def test_an_absolute_reference_to_our_patient_counts():
    chart = chart_of(condition(subject={"reference": f"https://ehr.example/fhir/Patient/{PID}"}))
    assert references(chart.conditions_in("SCIATICA")) == ["Condition/c1"]


def test_a_versioned_reference_to_our_patient_counts():
    chart = chart_of(condition(subject={"reference": f"Patient/{PID}/_history/3"}))
    assert references(chart.conditions_in("SCIATICA")) == ["Condition/c1"]


# --- Medications ----------------------------------------------------------------------------


def _diuretics(chart: Chart) -> list[tuple[str, str]]:
    """Each diuretic, and how it matched: "system|code", or "name 'X'" (X: the drug's name)."""
    return [
        (m.reference, f"{c.system}|{c.code}" if c else f"name {m.name!r}")
        for m, c in chart.medications_in("DIURETIC")
    ]


def test_medication_reference_is_resolved_from_a_contained_medication():
    furosemide = {
        "resourceType": "Medication",
        "id": "med",
        "code": {"coding": [{"system": RXNORM, "code": "4603", "display": "furosemide"}]},
    }
    request = medication_request(medicationReference={"reference": "#med"}, contained=[furosemide])
    assert _diuretics(chart_of(request)) == [("MedicationRequest/m1", f"{RXNORM}|4603")]


def test_medication_reference_is_resolved_from_a_medication_in_the_bundle():
    hctz = {
        "resourceType": "Medication",
        "id": "hctz",
        "code": {"coding": [{"system": RXNORM, "code": "5487"}]},
    }
    request = medication_request(medicationReference={"reference": "Medication/hctz"})
    assert _diuretics(chart_of(request, hctz)) == [("MedicationRequest/m1", f"{RXNORM}|5487")]


def test_unresolved_medication_reference_falls_back_to_its_display_name():
    request = medication_request(
        medicationReference={"reference": "Medication/elsewhere", "display": "Bumetanide 1 mg"}
    )
    assert _diuretics(chart_of(request)) == [("MedicationRequest/m1", "name 'Bumetanide 1 mg'")]


def test_medication_without_a_drug_matches_nothing():
    request = medication_request(medicationReference={"reference": "Medication/elsewhere"})
    assert _diuretics(chart_of(request)) == []


@pytest.mark.parametrize("status", ["active", "on-hold", "draft"])
def test_active_on_hold_or_draft_medication_counts(status):
    request = medication_request(status=status, medicationCodeableConcept={"text": "Furosemide"})
    assert _diuretics(chart_of(request)) == [("MedicationRequest/m1", "name 'Furosemide'")]


@pytest.mark.parametrize("status", ["stopped", "completed", "cancelled", "entered-in-error"])
def test_stopped_or_completed_medication_does_not_count(status):
    request = medication_request(status=status, medicationCodeableConcept={"text": "Furosemide"})
    assert _diuretics(chart_of(request)) == []


# --- Observation findings -------------------------------------------------------------------


def _finding(value: dict) -> dict:
    o = observation(loinc="x", value=None, days_ago=3, **value)
    o["code"] = {"coding": [{"system": SNOMED, "code": "55300003", "display": "Cramp"}]}
    return o


@pytest.mark.parametrize(
    "value",
    [
        {"valueBoolean": False},
        {"valueCodeableConcept": {"text": "Absent"}},
        {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260413007"}]}},
    ],
)
def test_a_finding_recorded_as_absent_is_not_a_report(value):
    assert chart_of(_finding(value)).observations_in("CRAMP", 30) == []


@pytest.mark.parametrize(
    "value", [{}, {"valueBoolean": True}, {"valueCodeableConcept": {"text": "Present"}}]
)
def test_a_finding_recorded_as_present_is_a_report(value):
    assert references(chart_of(_finding(value)).observations_in("CRAMP", 30)) == ["Observation/o1"]


@pytest.mark.parametrize(
    "value",
    [
        {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "2667000"}]}},
        {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "410516002"}]}},
        {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260385009"}]}},
        {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "373067005"}]}},
        {"valueCodeableConcept": {"coding": [{"system": V2_0136, "code": "N"}]}},
        {
            "valueCodeableConcept": {
                "coding": [{"system": "http://ehr.example", "code": "0", "display": "No"}]
            }
        },
        {"valueCodeableConcept": {"text": "Negative"}},
        {"valueString": "not present"},
    ],
    ids=[
        "absent",
        "known-absent",
        "negative",
        "no",
        "v2-N",
        "display-no",
        "text-negative",
        "string",
    ],
)
def test_the_catalog_v2_negation_values_record_a_finding_as_absent(value):
    chart = chart_of(_finding(value))
    assert chart.observations_in("CRAMP", 30) == []
    assert references(chart.observations_coded("CRAMP", 30)) == ["Observation/o1"]


# --- Text fallback (catalog v2): a record whose codes no value set knows is read by name ------


def local_condition(text: str, **fields) -> dict:
    resource = condition(code="LR1", system="http://ehr.example/codes", **fields)
    resource["code"]["text"] = text
    return resource


def test_a_condition_with_an_unknown_code_is_read_by_its_name():
    chart = chart_of(local_condition("Lumbar radiculopathy"))
    (match,) = chart.conditions_in("SCIATICA")
    assert match.fact.reference == "Condition/c1" and match.by_name


@pytest.mark.parametrize("text", ["No sciatica", "Possible sciatica", "Sciatica in mother"])
def test_a_name_that_is_negated_uncertain_or_about_someone_else_does_not_count(text):
    assert nothing_classified(chart_of(local_condition(text)))


def test_a_name_that_says_history_of_is_past():
    chart = chart_of(local_condition("History of sciatica"))
    assert chart.conditions_in("SCIATICA") == []
    assert references(chart.past_conditions_in("SCIATICA")) == ["Condition/c1"]


@pytest.mark.parametrize("text", ["Saddle numbness", "Perineal numbness"])
def test_saddle_numbness_by_name_is_saddle_anaesthesia_never_a_nerve_symptom(text):
    chart = chart_of(local_condition(text))
    assert references(chart.conditions_in("SADDLE_ANAESTHESIA")) == ["Condition/c1"]
    assert chart.conditions_in("NERVE_SYMPTOM") == []


def test_saddle_numbness_in_the_draft_note_is_not_a_nerve_symptom():
    text = b"Saddle numbness since yesterday. Sciatica down the right leg. Calf cramps at night."
    note = {
        "resourceType": "DocumentReference",
        "id": "n1",
        "content": [
            {"attachment": {"contentType": "text/plain", "data": base64.b64encode(text).decode()}}
        ],
    }
    chart = chart_of(hook="dev.crampcds.note-sign", context={"note": note})
    assert len(chart.noted_in("SADDLE_ANAESTHESIA")) == 1
    assert chart.noted_in("NERVE_SYMPTOM") == []


def local_lab(text: str, value: float, unit: str) -> dict:
    resource = observation(value=value, unit=unit)
    resource["code"] = {
        "coding": [{"system": "http://ehr.example/lab", "code": "L1"}],
        "text": text,
    }
    return resource


def test_a_lab_with_a_local_code_is_read_by_the_analyte_name_in_its_unit():
    result, _ = chart_of(local_lab("POTASSIUM", 3.1, "mmol/L")).latest_result(labs.POTASSIUM)
    assert result.value == 3.1 and result.by_name and result.is_low()


def test_a_local_lab_name_in_a_unit_not_the_analytes_is_not_read():
    chart = chart_of(local_lab("POTASSIUM", 3.1, "mg/dL"))
    assert chart.latest_result(labs.POTASSIUM) == (None, [])


def test_an_ionized_calcium_by_name_is_never_a_total_calcium():
    chart = chart_of(local_lab("Calcium, ionized", 1.0, "mmol/L"))
    assert chart.latest_result(labs.CALCIUM_TOTAL) == (None, [])
    result, _ = chart.latest_result(labs.CALCIUM_IONIZED)
    assert result.value == 1.0 and result.by_name


def test_only_concepts_of_real_length_are_remembered_across_requests():
    # A client sending megabytes of concept text must not pin them in the per-worker caches.
    from cds_service import chart as chart_module

    limit = chart_module._KEY_MAX_CHARS
    coding = {"system": SNOMED, "code": "55300003", "display": "Cramp"}
    fixed = len(SNOMED) + len("55300003") + len("Cramp")
    at_limit = {"text": "x" * (limit - fixed), "coding": [coding]}
    over = {"text": "x" * (limit - fixed + 1), "coding": [coding]}
    assert chart_module._concept_key(at_limit) is not None
    assert chart_module._concept_key(over) is None
