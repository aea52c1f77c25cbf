"""Evidence and Finding are frozen dataclasses with a hand-written __init__ (one __dict__ update
instead of one object.__setattr__ per field): see tests/test_chart_construction.py."""

from __future__ import annotations

import pytest
from test_chart_construction import check_hand_written_init

from cds_service.rules.base import Evidence, Finding


@pytest.mark.parametrize("cls", [Evidence, Finding])
def test_hand_written_init_takes_exactly_the_dataclass_fields(cls):
    check_hand_written_init(cls)


def test_defaults_are_the_declared_ones():
    assert Evidence("cramps") == Evidence("cramps", None, None, None, None, None, None, ())
    finding = Finding("info")
    assert (finding.evidence, finding.missing, finding.flags, finding.decisive) == (
        (),
        (),
        frozenset(),
        None,
    )
    assert (finding.reasons, finding.orders, finding.rule_id) == ((), (), "")
