"""The evidence digest's fast path (quiet.evidence_fingerprint: orjson for the items and the
whole, checked once) gives the digest `json` gives: stored quiet entries were made from
`json.dumps(..., separators=(",", ":"), sort_keys=True)` and must keep matching."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from conftest import EXAMPLES, scenario_names

from cds_service import fhirdates, quiet
from cds_service.chart import Fact, Match, NoteFact
from cds_service.engine import Engine
from cds_service.rules.base import Evidence, Finding
from cds_service.services import SERVICES
from cds_service.settings import Settings


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def reference(finding: Finding) -> str:
    """The digest as it was first written: `json` for every item and for the whole."""
    items = sorted(_json(quiet._item(e)) for e in finding.evidence)
    return hashlib.sha256(_json([items, sorted(finding.reasons)]).encode()).hexdigest()


def _fact(code: object, source: str = "problem-list") -> Fact:
    return Fact("Condition/1", code, ("onsetDateTime",), {"onsetDateTime": "2026-11-01"}, source)


ODD_NAMES = [
    "Crampe musculaire é",  # outside ASCII: json escapes, orjson does not
    "tab\there, del\x7f",  # DEL: json escapes it, orjson does not: the final check catches it
    '"quoted" \\ back',
    "\ud800 lone surrogate",  # orjson refuses it
    "日本語",
    "plain",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_text_gives_the_digest_json_gives(name):
    by_name = Evidence("cramps", match=Match(_fact({"text": name})))
    coded = Evidence(
        "sciatica", match=Match(_fact({"coding": [{"system": "s", "code": name}, {"code": "x"}]}))
    )
    valued = Evidence("age-65", values=(("age", "66"), ("note", name)))
    noted = Evidence("cramps", match=Match(NoteFact("note#1", {"text": name}, (), {})))
    finding = Finding("info", (by_name, coded, valued, noted), reasons=("age-65", "cramps"))
    assert quiet.evidence_fingerprint(finding) == reference(finding)
    for one in finding.evidence:
        alone = Finding("info", (one,))
        assert quiet.evidence_fingerprint(alone) == reference(alone)


def test_a_value_orjson_refuses_gives_the_digest_json_gives():
    finding = Finding("info", (Evidence("age-65", values=(("age", 2**70),)),))  # beyond 64 bits
    assert quiet.evidence_fingerprint(finding) == reference(finding)


def test_every_scenario_gives_the_digests_json_gives(monkeypatch):
    engine = Engine(Settings(fixed_now=fhirdates.parse("2026-11-20T12:00:00Z")))
    by_hook = {s.hook: s for s in SERVICES}
    digested: list[Finding] = []  # every finding the engine digests
    fingerprint = quiet.evidence_fingerprint
    monkeypatch.setattr(
        quiet, "evidence_fingerprint", lambda f: digested.append(f) or fingerprint(f)
    )
    for name in scenario_names():
        request = json.loads((EXAMPLES / f"{name}.request.json").read_text())
        service = by_hook.get(request.get("hook"), by_hook["patient-view"])
        digested.clear()
        outcome = engine.evaluate(service, copy.deepcopy(request))
        assert list(outcome.evidence) == [reference(f) for f in digested], name
    engine.close()
