"""The registry's bookkeeping around each rule: what a rule returns reaches the cards whole."""

from __future__ import annotations

import dataclasses

from cds_service.rules.base import Evidence, Finding, RegisteredRule


def test_run_keeps_every_field_and_sets_the_rule_id():
    """RegisteredRule.run copies a Finding field by field (cheaper than dataclasses.replace):
    a field added to Finding must be copied there too, which this test notices."""
    values = {
        "indicator": "warning",
        "evidence": (Evidence("cramps"),),
        "missing": (),
        "flags": frozenset({"site"}),
        "decisive": Evidence("cramps"),
        "reasons": ("ckd",),
        "orders": ("ServiceRequest/1",),
    }
    assert {f.name for f in dataclasses.fields(Finding)} == set(values) | {"rule_id"}
    registered = RegisteredRule("some-rule", lambda chart, prior: Finding(**values))
    finding = registered.run(None, {})
    assert finding == Finding(**values, rule_id="some-rule")
    assert RegisteredRule("none", lambda chart, prior: None).run(None, {}) is None
