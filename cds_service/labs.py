"""Lab and vital-sign definitions from the catalog's threshold table.

Each names its concept group, the canonical unit its thresholds are written in, how recorded
units convert to it (UCUM codes and their common spellings), and its fixed cut-offs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Convert = Callable[[float], float]


def normalise_unit(unit: str) -> str:
    return unit.replace(" ", "").replace("µ", "u").replace("μ", "u").lower()


def _scale(factor: float) -> Convert:
    return lambda value: value * factor


@dataclass(frozen=True)
class Lab:
    name: str
    value_set: str  # the concept group in valuesets/
    unit: str  # the canonical unit thresholds are written in
    converters: dict[str, Convert]  # normalised unit -> to canonical
    lookback_days: int
    low_below: float | None = None
    high_above: float | None = None
    markedly_low_below: float | None = None
    decimals: int = 1  # how many decimals a clinician writes the value with
    # Names a local code's display or text gives the analyte (whole words, lower case); a name
    # counts only with one of the lab's units. `not_with` words make it another analyte.
    names: tuple[str, ...] = ()
    not_with: tuple[str, ...] = ()

    def to_canonical(self, value: float, unit: str) -> float | None:
        convert = self.converters.get(normalise_unit(unit))
        return None if convert is None else convert(value)


def _units(mapping: dict[tuple[str, ...], Convert]) -> dict[str, Convert]:
    return {normalise_unit(u): convert for units, convert in mapping.items() for u in units}


_SAME = _scale(1.0)
# Potassium and sodium: mEq/L equals mmol/L.
_MOLAR = _units({("mmol/L", "mEq/L", "meq/L"): _SAME})
# Calcium and magnesium are compared in mg/dL; mEq/L is half a mmol/L for both.
_CALCIUM = _units({("mg/dL",): _SAME, ("mmol/L",): _scale(4.008), ("mEq/L",): _scale(2.004)})
_MAGNESIUM = _units(
    {("mg/dL",): _SAME, ("mmol/L",): _scale(2.4305), ("mEq/L",): _scale(2.4305 / 2)}
)
_TSH = _units({("m[IU]/L", "mIU/L", "u[IU]/mL", "uIU/mL", "mU/L"): _SAME})
_EGFR = _units({("mL/min/{1.73_m2}", "mL/min/1.73m2", "mL/min/1.73.m2", "mL/min/1.73_m2"): _SAME})
_TEMPERATURE = _units(
    {("Cel", "°C", "degC"): _SAME, ("[degF]", "°F", "degF"): lambda f: (f - 32) * 5 / 9}
)
_WEIGHT = _units(
    {("kg",): _SAME, ("g",): _scale(0.001), ("[lb_av]", "lb", "lbs"): _scale(0.45359237)}
)
_PERCENT = _units({("%",): _SAME})

DAYS_12_MONTHS = 365

_IONIZED = ("ionized", "ionised", "free", "ica")
POTASSIUM = Lab(
    "potassium",
    "POTASSIUM",
    "mmol/L",
    _MOLAR,
    90,
    low_below=3.5,
    markedly_low_below=3.0,
    names=("potassium", "k", "k+"),
)
SODIUM = Lab(
    "sodium",
    "SODIUM",
    "mmol/L",
    _MOLAR,
    90,
    low_below=135,
    markedly_low_below=125,
    names=("sodium", "na", "na+"),
    decimals=0,
)
CALCIUM_TOTAL = Lab(
    "calcium (total)",
    "CALCIUM_TOTAL",
    "mg/dL",
    _CALCIUM,
    90,
    low_below=8.5,
    markedly_low_below=7.5,
    names=("calcium", "ca"),
    not_with=(*_IONIZED, "corrected"),
)
CALCIUM_CORRECTED = Lab(
    "calcium (albumin-corrected)",
    "CALCIUM_CORRECTED",
    "mg/dL",
    _CALCIUM,
    90,
    low_below=8.5,
    markedly_low_below=7.5,
    names=("corrected calcium", "calcium corrected"),
)
# Ionized calcium is compared in mmol/L (its own thresholds); never read as a total calcium.
CALCIUM_IONIZED = Lab(
    "calcium (ionized)",
    "CALCIUM_IONIZED",
    "mmol/L",
    _units({("mmol/L",): _SAME, ("mg/dL",): _scale(1 / 4.008), ("mEq/L",): _scale(0.5)}),
    90,
    low_below=1.12,
    markedly_low_below=1.0,
    names=(
        "ionized calcium",
        "ionised calcium",
        "calcium ionized",
        "calcium ionised",
        "free calcium",
        "ica",
    ),
    decimals=2,
)
MAGNESIUM = Lab(
    "magnesium",
    "MAGNESIUM",
    "mg/dL",
    _MAGNESIUM,
    90,
    low_below=1.7,
    markedly_low_below=1.2,
    names=("magnesium", "mg"),
)
ELECTROLYTES: tuple[Lab, ...] = (
    POTASSIUM,
    SODIUM,
    CALCIUM_TOTAL,
    CALCIUM_CORRECTED,
    CALCIUM_IONIZED,
    MAGNESIUM,
)

TSH = Lab(
    "TSH",
    "TSH",
    "mIU/L",
    _TSH,
    DAYS_12_MONTHS,
    high_above=4.5,
    names=("tsh", "thyrotropin"),
    decimals=2,
)
EGFR = Lab(
    "eGFR",
    "EGFR",
    "mL/min/1.73m2",
    _EGFR,
    DAYS_12_MONTHS,
    names=("egfr", "estimated glomerular filtration rate", "gfr"),
    decimals=0,
)
EGFR_CKD_BELOW = 60.0
EGFR_NSAID_BELOW = 30.0
TEMPERATURE = Lab(
    "body temperature",
    "BODY_TEMPERATURE",
    "Cel",
    _TEMPERATURE,
    7,
    names=("temperature", "temp", "body temperature", "oral temperature"),
)
FEVER_AT_OR_ABOVE = 38.0
WEIGHT = Lab(
    "body weight", "BODY_WEIGHT", "kg", _WEIGHT, DAYS_12_MONTHS, names=("weight", "body weight")
)
WEIGHT_LOSS_FRACTION = 0.05
HBA1C = Lab(
    "HbA1c",
    "HBA1C",
    "%",
    _PERCENT,
    DAYS_12_MONTHS,
    names=("hba1c", "a1c", "hemoglobin a1c", "haemoglobin a1c", "glycated hemoglobin"),
)
HBA1C_DIABETES_AT_OR_ABOVE = 6.5
PVR = Lab(
    "post-void residual",
    "POST_VOID_RESIDUAL",
    "mL",
    _units({("mL", "ml", "cc"): _SAME}),
    14,
    names=("post void residual", "postvoid residual", "pvr", "bladder scan"),
    decimals=0,
)
PVR_ABOVE = 200.0
# Every lab the chart reads, in the order a local code's name is tried (specific names first).
LABS: tuple[Lab, ...] = (
    CALCIUM_IONIZED,
    CALCIUM_CORRECTED,
    POTASSIUM,
    SODIUM,
    CALCIUM_TOTAL,
    MAGNESIUM,
    TSH,
    EGFR,
    TEMPERATURE,
    WEIGHT,
    HBA1C,
    PVR,
)
