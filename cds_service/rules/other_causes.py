"""Other causes of cramps: electrolytes, drugs, comorbidities."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart, LabResult
from ..labs import (
    EGFR,
    EGFR_CKD_BELOW,
    ELECTROLYTES,
    HBA1C,
    HBA1C_DIABETES_AT_OR_ABOVE,
    SODIUM,
    TSH,
)
from .base import CHART_HOOKS, Evidence, Finding, flags, of, of_medications, of_result, rule
from .episode import pregnancy

OTHER_CAUSE_RULES = ("electrolyte-cramp-cause", "medication-cramp-cause", "comorbidity-cramp-cause")


def fluid_advice(chart: Chart) -> dict[str, bool]:
    """The catalog's fluid rule: advise fluids only when sodium is not low and no thiazide or
    loop diuretic is active; with low sodium, do not, and review the diuretic. Asked by two
    rules: worked out once per chart (callers read the dict, never change it)."""
    return chart.once("fluid-advice", _fluid_advice)  # type: ignore[return-value]


def _fluid_advice(chart: Chart) -> dict[str, bool]:
    sodium, _ = chart.latest_result(SODIUM)
    low_sodium = sodium is not None and sodium.is_low()
    diuretic = bool(chart.medications_in("DIURETIC"))
    return {
        "fluids_ok": not low_sodium and not diuretic,
        "no_fluids_low_sodium": low_sodium,
        "no_fluids_diuretic": diuretic and not low_sodium,
    }


def _severity(result: LabResult) -> float:
    """How far below its threshold a result is (a fraction), for choosing the summary's value."""
    threshold = result.lab.low_below or result.range_low or result.value
    return (threshold - result.value) / threshold if threshold else 0.0


@rule("electrolyte-cramp-cause", hooks=CHART_HOOKS)
def electrolyte_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """The latest potassium, sodium, calcium (total, corrected, ionized) or magnesium within 90
    days is low, or an electrolyte disorder is active."""
    low: list[LabResult] = []
    missing = []
    for lab in ELECTROLYTES:
        result, unreadable = chart.latest_result(lab)
        missing += unreadable
        if result is not None and result.is_low():
            low.append(result)
    disorders = of("electrolyte-disorder", chart.problems_in("ELECTROLYTE_DX"))
    if not low and not disorders:
        return None
    marked = [r for r in low if r.is_markedly_low()]
    ordered = sorted(marked, key=_severity, reverse=True) + sorted(
        (r for r in low if r not in marked), key=_severity, reverse=True
    )
    evidence = [of_result("markedly-low" if r in marked else "low", r) for r in ordered] + disorders
    diuretics = of_medications("diuretic-cause", chart.medications_in("DIURETIC"))
    evidence += diuretics
    potassium_marked = any(r.lab.value_set == "POTASSIUM" for r in marked)
    return Finding(
        "warning",
        tuple(evidence),
        tuple(missing),
        flags=flags(
            markedly_low=bool(marked),
            mildly_low=bool(low) and not marked,
            disorder_only=not low,
            potassium_ecg=potassium_marked,
            diuretic=bool(diuretics),
            **fluid_advice(chart),
        ),
        decisive=evidence[0],
    )


@rule("cramp-labs-missing", hooks=CHART_HOOKS)
def cramp_labs_missing(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """No readable potassium, sodium, calcium or magnesium result within the lookback."""
    unreadable = []
    for lab in ELECTROLYTES:
        result, cannot_read = chart.latest_result(lab)
        if result is not None:
            return None
        unreadable += cannot_read
    return Finding("info", (Evidence("no-electrolytes"),), tuple(unreadable))


@rule("medication-cramp-cause", hooks=CHART_HOOKS)
def medication_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """An active diuretic or statin."""
    diuretics = of_medications("diuretic", chart.medications_in("DIURETIC"))
    statins = of_medications("statin", chart.medications_in("STATIN"))
    if not diuretics and not statins:
        return None
    weakness = bool(chart.findings_in("LEG_WEAKNESS"))
    return Finding(
        "info",
        tuple(diuretics + statins),
        flags=flags(
            diuretic=bool(diuretics),
            statin=bool(statins),
            statin_weakness=bool(statins) and weakness,
        ),
        decisive=(diuretics + statins)[0],
    )


@rule("comorbidity-cramp-cause", hooks=CHART_HOOKS)
def comorbidity_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Hypothyroidism (or a high TSH), chronic kidney disease (or eGFR below 60), pregnancy,
    peripheral arterial disease, diabetes or neuropathy (or HbA1c 6.5 % or more)."""
    missing = []
    evidence: list[Evidence] = []
    reasons: list[str] = []

    tsh, unreadable = chart.latest_result(TSH)
    missing += unreadable
    found = of("hypothyroidism", chart.lasting_in("HYPOTHYROID"))
    if tsh is not None and tsh.is_high():
        found.append(of_result("tsh-high", tsh))
    if found:
        reasons.append("hypothyroidism")
    evidence += found

    egfr, unreadable = chart.latest_result(EGFR)
    missing += unreadable
    found = of("ckd", chart.lasting_in("CKD"))
    if egfr is not None and egfr.value < EGFR_CKD_BELOW:
        found.append(of_result("egfr-below-60", egfr))
    if found:
        reasons.append("ckd")
    evidence += found

    found = pregnancy(chart)
    if found:
        reasons.append("pregnancy")
    evidence += found

    found = of("pad", chart.lasting_in("PAD"))
    if found:
        reasons.append("pad")
    evidence += found

    a1c, unreadable = chart.latest_result(HBA1C)
    missing += unreadable
    found = of("diabetes", chart.lasting_in("DIABETES_NEUROPATHY"))
    if a1c is not None and a1c.value >= HBA1C_DIABETES_AT_OR_ABOVE:
        found.append(of_result("hba1c-high", a1c))
    if found:
        reasons.append("diabetes")
    evidence += found

    if not evidence:
        return None
    return Finding(
        "info",
        tuple(evidence),
        tuple(missing),
        flags=flags(pad="pad" in reasons, tsh_missing=tsh is None),
        decisive=evidence[0],
        reasons=tuple(reasons),
    )
