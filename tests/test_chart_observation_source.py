"""Where an Observation comes from, by its categories (chart._observation_source): laboratory
wins over vital-signs, read only from well-formed codings (a system and a non-empty code)."""

from __future__ import annotations

import pytest

from cds_service.chart import _observation_source
from cds_service.terminology import codings_of

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def by_the_book(resource: dict) -> str:
    categories = resource.get("category")
    concepts = categories if isinstance(categories, list) else [categories]
    codes = {c.code for concept in concepts for c in codings_of(concept)}
    if "laboratory" in codes:
        return "lab"
    return "vital-sign" if "vital-signs" in codes else "finding"


def concept(*codes, system=CATEGORY) -> dict:
    return {"coding": [{"system": system, "code": code} for code in codes]}


CASES = [
    None,
    [],
    [concept("laboratory")],
    [concept("vital-signs")],
    [concept("vital-signs"), concept("laboratory")],
    [concept("vital-signs", "laboratory")],
    [concept("exam")],
    concept("laboratory"),  # one object sent for the array
    [concept("laboratory", system=None)],
    [{"coding": [{"code": "laboratory"}]}],
    [{"coding": [{"system": CATEGORY, "code": ["laboratory"]}]}],
    [{"coding": "laboratory"}, "vital-signs", 3],
    [concept("", "vital-signs")],
]


@pytest.mark.parametrize("categories", CASES)
def test_source_is_read_as_codings_of_reads_the_categories(categories):
    resource = {"resourceType": "Observation"}
    if categories is not None:
        resource["category"] = categories
    assert _observation_source(resource) == by_the_book(resource)
