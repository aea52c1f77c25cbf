"""The chart remembers each distinct concept's classification across requests (chart._CLASSIFIED)
and hands the remembered groups out without copying them: a record whose reading changes them
(numbness at a saddle site is saddle anaesthesia, not a nerve symptom) must change a copy, never
what the next record with the same code is given."""

from __future__ import annotations

import pytest
from test_chart import chart_of, condition, local_condition, references

from cds_service import chart as chart_module

PARESTHESIA = "R20.2"  # ICD-10-CM, in NERVE_SYMPTOM and SENSORY_LOSS


def numbness(cid: str, site: str | None = None) -> dict:
    resource = condition(cid=cid, code=PARESTHESIA)
    if site is not None:
        resource["bodySite"] = [{"text": site}]
    return resource


@pytest.mark.parametrize("remembered_first", [True, False])
def test_saddle_reading_of_one_record_does_not_change_the_remembered_groups(remembered_first):
    if not remembered_first:
        chart_module._CLASSIFIED.clear()
    saddle = chart_of(numbness("c1", "saddle area"))
    assert references(saddle.conditions_in("SADDLE_ANAESTHESIA")) == ["Condition/c1"]
    assert saddle.conditions_in("NERVE_SYMPTOM") == []
    # The same code, elsewhere or nowhere: still a nerve symptom, as on a fresh classification.
    plain = chart_of(numbness("c2"), numbness("c3", "left calf"))
    assert references(plain.conditions_in("NERVE_SYMPTOM")) == ["Condition/c2", "Condition/c3"]
    assert plain.conditions_in("SADDLE_ANAESTHESIA") == []
    # And once more at the saddle, after the plain reading was remembered.
    again = chart_of(numbness("c4", "perineum"))
    assert references(again.conditions_in("SADDLE_ANAESTHESIA")) == ["Condition/c4"]
    assert again.conditions_in("NERVE_SYMPTOM") == []


@pytest.mark.parametrize("text", ["Saddle numbness", "Numbness of leg"])
def test_remembered_answer_equals_a_fresh_classification(text):
    """What `_Builder.groups` remembers is what classifying the concept afresh answers."""
    resource = local_condition(text)
    resource["code"]["coding"].append(
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": PARESTHESIA, "display": text}
    )
    chart_of(resource)  # remembers it
    key = chart_module._concept_key(resource["code"])
    terminology, hits, named = chart_module._CLASSIFIED[key]
    assert (hits, named) == chart_module._classify(terminology, resource["code"])
    assert named == (text == "Saddle numbness")
    fresh = chart_of(resource)
    in_saddle = references(fresh.conditions_in("SADDLE_ANAESTHESIA")) == ["Condition/c1"]
    assert in_saddle == named
