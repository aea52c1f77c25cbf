"""Aspirin above 325 mg a dose counts as an NSAID (chart._medication_extra). A quick test of the
concept's strings (_may_name_aspirin) lets other drugs skip reading their names: it must never
skip a drug the full reading would count."""

from __future__ import annotations

import pytest

from cds_service import chart as chart_module
from cds_service.chart import Medication, _medication_extra, _names_of

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def full_reading(medication: Medication) -> tuple[str, ...]:
    """_medication_extra as it reads without the quick test."""
    names = " ".join(_names_of(medication.concept)).lower()
    if "aspirin" not in names and "acetylsalicylic" not in names:
        return ()
    dose = chart_module._dose_mg(medication.resource)
    if dose is None:
        strengths = [float(m) for m in chart_module._MG.findall(names)]
        dose = max(strengths) if strengths else None
    return ("NSAID",) if dose is not None and dose > 325.0 else ()


CONCEPTS = [
    {"text": "Aspirin 500 MG Oral Tablet"},
    {"text": "aspirin 81 mg"},
    {"text": "  ACETYLSALICYLIC acid 650 mg  "},
    {"coding": [{"system": RXNORM, "code": "1", "display": "Aspirin 975 MG"}]},
    {"coding": [{"code": "1", "display": "aspirin 600 mg"}]},  # no system: display still read
    {"coding": [{"system": RXNORM, "code": "", "display": "aspirin 600 mg"}]},  # empty code
    {"coding": [{"system": RXNORM, "code": "1", "display": ["aspirin 600 mg"]}]},
    {"coding": ["aspirin 600 mg", None, 7]},
    {"text": "ASPİRIN 500 mg"},  # dotted capital I: not "aspirin" in lower case either way
    {"text": "furosemide 40 MG Oral Tablet"},
    {"text": 5, "coding": {"display": "aspirin 500 mg"}},
    {},
]


@pytest.mark.parametrize("concept", CONCEPTS)
@pytest.mark.parametrize("dose", [None, 500, 100])
def test_quick_test_never_changes_the_answer(concept, dose):
    resource: dict = {"resourceType": "MedicationRequest", "status": "active"}
    if dose is not None:
        resource["dosageInstruction"] = [
            {"doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg"}}]}
        ]
    medication = Medication("MedicationRequest/m1", concept, None, resource)
    assert _medication_extra(medication) == full_reading(medication)


def test_aspirin_at_analgesic_dose_is_an_nsaid():
    high = Medication("MedicationRequest/m1", {"text": "Aspirin 500 MG Oral Tablet"}, None, {})
    low = Medication("MedicationRequest/m2", {"text": "Aspirin 81 MG Oral Tablet"}, None, {})
    assert _medication_extra(high) == ("NSAID",)
    assert _medication_extra(low) == ()
