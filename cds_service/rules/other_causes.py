"""Other causes of cramps: electrolytes, drugs, comorbidities."""

from __future__ import annotations

from collections.abc import Mapping

from ..chart import Chart
from ..labs import (
    EGFR,
    EGFR_CKD_BELOW,
    ELECTROLYTES,
    HBA1C,
    HBA1C_DIABETES_AT_OR_ABOVE,
    TSH,
)
from .base import Evidence, Finding, evidence_of

OTHER_CAUSE_RULES = ("electrolyte-cramp-cause", "medication-cramp-cause", "comorbidity-cramp-cause")


def electrolyte_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """The latest potassium, sodium, calcium or magnesium within 90 days is low, or an
    electrolyte disorder is active."""
    evidence: list[Evidence] = []
    missing: list[str] = []
    for lab in ELECTROLYTES:
        result, unreadable = chart.latest_result(lab)
        missing += unreadable
        if result is not None and result.is_low():
            evidence.append(Evidence.of_result(f"Low {lab.name}", result))
    evidence += evidence_of("Electrolyte disorder", chart.conditions_in("ELECTROLYTE_DX"))
    if not evidence:
        return None
    return Finding("electrolyte-cramp-cause", "warning", tuple(evidence), tuple(missing))


def cramp_labs_missing(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """No readable potassium, sodium, calcium or magnesium result within the lookback."""
    unreadable: list[str] = []
    for lab in ELECTROLYTES:
        result, cannot_read = chart.latest_result(lab)
        if result is not None:
            return None
        unreadable.extend(cannot_read)
    names = ", ".join(lab.name for lab in ELECTROLYTES)
    return Finding(
        "cramp-labs-missing",
        "info",
        evidence=(Evidence(f"No readable result within 90 days for: {names}"),),
        missing=tuple(unreadable),
    )


def medication_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """An active diuretic or statin."""
    diuretics = chart.medications_in("DIURETIC")
    statins = chart.medications_in("STATIN")
    if not diuretics and not statins:
        return None
    evidence = [Evidence.of_medication("Diuretic", m, how) for m, how in diuretics]
    evidence += [Evidence.of_medication("Statin", m, how) for m, how in statins]
    flags = set()
    if diuretics:
        flags.add("diuretic")
    if statins:
        flags.add("statin")
        if chart.findings_in("LEG_WEAKNESS"):
            flags.add("statin_weakness")
    drugs = ", ".join(dict.fromkeys(m.label() for m, _ in diuretics + statins))
    return Finding(
        "medication-cramp-cause",
        "info",
        tuple(evidence),
        flags=frozenset(flags),
        values={"drugs": drugs},
    )


def comorbidity_cramp_cause(chart: Chart, prior: Mapping[str, Finding]) -> Finding | None:
    """Hypothyroidism, chronic kidney disease, pregnancy, PAD, diabetes or neuropathy."""
    found: dict[str, list[Evidence]] = {}
    missing: list[str] = []

    tsh, unreadable = chart.latest_result(TSH)
    missing += unreadable
    found["hypothyroidism"] = evidence_of("Hypothyroidism", chart.conditions_in("HYPOTHYROID"))
    if tsh is not None and tsh.is_high():
        found["hypothyroidism"].append(Evidence.of_result("High", tsh))

    egfr, unreadable = chart.latest_result(EGFR)
    missing += unreadable
    found["chronic kidney disease"] = evidence_of(
        "Chronic kidney disease", chart.conditions_in("CKD")
    )
    if egfr is not None and egfr.value < EGFR_CKD_BELOW:
        found["chronic kidney disease"].append(
            Evidence.of_result(f"eGFR below {EGFR_CKD_BELOW:g}", egfr)
        )

    found["pregnancy"] = evidence_of("Pregnancy", chart.conditions_in("PREGNANCY"))
    found["peripheral arterial disease"] = evidence_of(
        "Peripheral arterial disease", chart.conditions_in("PAD")
    )
    a1c, unreadable = chart.latest_result(HBA1C)
    missing += unreadable
    found["diabetes or neuropathy"] = evidence_of(
        "Diabetes or neuropathy", chart.conditions_in("DIABETES_NEUROPATHY")
    )
    if a1c is not None and a1c.value >= HBA1C_DIABETES_AT_OR_ABOVE:
        found["diabetes or neuropathy"].append(
            Evidence.of_result(f"HbA1c at or above {HBA1C_DIABETES_AT_OR_ABOVE:g} %", a1c)
        )

    found = {name: ev for name, ev in found.items() if ev}
    if not found:
        return None
    evidence = [e for items in found.values() for e in items]
    flags = {"pad"} if "peripheral arterial disease" in found else set()
    if tsh is None:
        flags.add("tsh_missing")
    return Finding(
        "comorbidity-cramp-cause",
        "info",
        tuple(evidence),
        tuple(missing),
        flags=frozenset(flags),
        values={"conditions": ", ".join(found)},
    )
