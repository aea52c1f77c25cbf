"""The chart's hot record classes (Fact, Match, LabResult) are frozen dataclasses with a
hand-written __init__ (one __dict__ update instead of one object.__setattr__ per field): each
must take exactly its dataclass fields, in order, with the dataclass's defaults, set every one,
and stay read-only and comparable as the generated one would."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from cds_service.chart import Fact, LabResult, Match, NoteFact


def check_hand_written_init(cls: type) -> None:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields, strict=True):
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert field.default_factory is dataclasses.MISSING  # a factory would need calling
        expected = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert parameter.default == expected, field.name
    # Every field set from its own argument, positionally and by keyword.
    values = {f.name: object() for f in fields}
    for made in (cls(*values.values()), cls(**values)):
        assert {name: getattr(made, name) for name in values} == values
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, fields[0].name, None)
    # Equal when the compared fields are, as the generated __eq__ says.
    assert cls(**values) == cls(**values)
    compared = [f.name for f in fields if f.compare]
    changed = dict(values, **{compared[-1]: object()})
    assert cls(**values) != cls(**changed)


@pytest.mark.parametrize("cls", [Fact, Match, LabResult])
def test_hand_written_init_takes_exactly_the_dataclass_fields(cls):
    check_hand_written_init(cls)


def test_note_fact_still_sets_the_fields_it_inherits():
    fact = NoteFact("draft note, characters 0-5", {"text": "cramp"}, ("recordedDate",), {}, "x")
    assert (fact.reference, fact.code, fact.date_fields, fact.resource, fact.source) == (
        "draft note, characters 0-5",
        {"text": "cramp"},
        ("recordedDate",),
        {},
        "x",
    )
    assert fact.quote == "" and fact.groups == () and fact.coded is False
