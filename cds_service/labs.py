"""Lab definitions from the catalog's threshold table: codes, canonical unit, conversions."""

from __future__ import annotations

from dataclasses import dataclass

MMOL_L = "mmol/L"
MG_DL = "mg/dL"


@dataclass(frozen=True)
class Lab:
    name: str
    value_set: str  # name of the concept group in valuesets/
    unit: str  # the canonical unit thresholds are written in
    factors: dict[str, float]  # normalised unit -> multiply to reach `unit`
    low_below: float | None = None
    lookback_days: int = 90

    def to_canonical(self, value: float, unit: str) -> float | None:
        factor = self.factors.get(normalise_unit(unit))
        return None if factor is None else value * factor


def normalise_unit(unit: str) -> str:
    return unit.replace(" ", "").lower()


_MOLAR = {"mmol/l": 1.0, "meq/l": 1.0}  # K and Na: mEq/L equals mmol/L
_CALCIUM = {"mg/dl": 1.0, "mmol/l": 4.008, "meq/l": 4.008 / 2}
_MAGNESIUM = {"mg/dl": 1.0, "mmol/l": 2.4305, "meq/l": 2.4305 / 2}

ELECTROLYTES: tuple[Lab, ...] = (
    Lab("potassium", "POTASSIUM", MMOL_L, _MOLAR, low_below=3.5),
    Lab("sodium", "SODIUM", MMOL_L, _MOLAR, low_below=135),
    Lab("calcium (total)", "CALCIUM_TOTAL", MG_DL, _CALCIUM, low_below=8.5),
    Lab("calcium (albumin-corrected)", "CALCIUM_CORRECTED", MG_DL, _CALCIUM, low_below=8.5),
    Lab("magnesium", "MAGNESIUM", MG_DL, _MAGNESIUM, low_below=1.7),
)
