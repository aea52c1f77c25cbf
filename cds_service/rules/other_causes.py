"""Other causes of cramps: electrolytes, drugs, comorbidities."""

from __future__ import annotations

from ..chart import Chart
from ..labs import ELECTROLYTES
from .base import Evidence, Finding


def cramp_labs_missing(chart: Chart) -> Finding | None:
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
