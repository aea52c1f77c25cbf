"""The quick shape checks of fhircheck pass a record without fhir.resources only when
fhir.resources would pass it too, and `fhir_problem` gives the same verdict either way: a
number's type (an int, a float, never a bool), and dicts and lists of the exact JSON types."""

from __future__ import annotations

import pytest

from cds_service import fhircheck

QUANTITIES = [
    {"value": 4.2, "unit": "mmol/L"},
    {"value": 4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    {"value": None, "unit": "mmol/L"},
    {"value": True, "unit": "mmol/L"},
    {"value": "4.2", "unit": "mmol/L"},
    {"value": 4.2, "unit": " mmol/L"},
    {"value": 4.2, "unit": ""},
    {"value": 4.2, "comparator": "<"},
    {},
    [],
]


def observation(**fields) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "K"}, **fields}


def slow_verdict(resource: dict) -> str | None:
    """fhir_problem with every quick check failing: fhir.resources decides."""
    original = fhircheck._all_plain
    try:
        fhircheck._all_plain = lambda resource, checks: False
        return fhircheck.fhir_problem("Observation/o1", resource)
    finally:
        fhircheck._all_plain = original


@pytest.mark.parametrize("quantity", QUANTITIES, ids=repr)
def test_a_plain_quantity_is_valid_and_the_verdict_is_fhir_resources(quantity):
    resource = observation(valueQuantity=quantity)
    if fhircheck._quantity(quantity):
        assert slow_verdict(resource) is None
    assert fhircheck.fhir_problem("Observation/o1", resource) == slow_verdict(resource)


def test_a_boolean_is_not_a_plain_number():
    assert fhircheck._quantity({"value": 1.5})
    assert fhircheck._quantity({"value": 2})
    assert not fhircheck._quantity({"value": True})
    assert not fhircheck._quantity({"value": False})


@pytest.mark.parametrize(
    "element, value",
    [
        ("subject", {"reference": "Patient/p1"}),
        ("subject", {"reference": ""}),
        ("category", [{"coding": [{"system": "s", "code": "laboratory"}]}]),
        ("category", []),
        ("category", {"coding": []}),
        ("referenceRange", [{"low": {"value": 3.5, "unit": "mmol/L"}}]),
        ("referenceRange", [{"low": {"value": False}}]),
        ("referenceRange", [{"low": 3.5}]),
    ],
    ids=repr,
)
def test_other_shapes_agree_with_fhir_resources(element, value):
    resource = observation(**{element: value})
    assert fhircheck.fhir_problem("Observation/o1", resource) == slow_verdict(resource)
