"""The evidence digest's canonical JSON (quiet._canonical_json) is exactly
`json.dumps(value, separators=(",", ":"), sort_keys=True)`: stored digests depend on it."""

from __future__ import annotations

import json

import pytest

from cds_service import quiet, terminology


def reference(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def test_every_character_is_written_as_json_writes_it():
    # Every code point, in runs of 256, as a value, as a key and inside a list.
    for start in range(0, 0x110000, 256):
        text = "".join(chr(c) for c in range(start, min(start + 256, 0x110000)))
        for value in (text, {"k": text}, {text: None}, [text, ["a", text]]):
            assert quiet._canonical_json(value) == reference(value), hex(start)


@pytest.mark.parametrize(
    "value",
    [
        {"label": "low", "day": None, "codes": ["loinc|2823-3"], "value": ["2.9", "mmol/L"]},
        {"z": 1, "a": {"y": True, "b": False}, "m": [], "n": {}},
        {"big": 2**70, "small": -(2**63)},  # beyond 64 bits: orjson refuses it
        {"lone": "\ud800", "quote": '"\\/'},  # a lone surrogate: orjson refuses
        [['{"day":"2026-11-18"}', "é"], ["b", "a"]],
        {"del": "\x7f", "tab": "\t\n\r\b\f\x00\x1f"},
    ],
)
def test_digested_shapes_are_written_as_json_writes_them(value):
    assert quiet._canonical_json(value) == reference(value)


@pytest.mark.parametrize(
    "concept",
    [
        {
            "coding": [
                {"system": "http://loinc.org", "code": "2823-3"},
                {"system": "s", "code": "a"},
            ]
        },
        {"coding": [{"system": "s", "code": ""}, {"system": None, "code": "x"}, {"code": "y"}]},
        {"coding": [{"system": "s", "code": 5}, "text", None, {"system": "s", "code": "z"}]},
        {"coding": [{"system": "s", "code": "a"}, {"system": "s", "code": "a", "display": 1}]},
        {"coding": {"system": "s", "code": "a"}, "text": " Leg Cramps "},
        {"text": "Cramp"},
        {"text": 7},
        "not a concept",
        None,
    ],
)
def test_codes_are_those_of_codings_of(concept):
    # quiet._codes reads the codings without making Coding objects: the same as it did.
    codes = sorted({f"{c.system}|{c.code}" for c in terminology.codings_of(concept)})
    expected = codes or [f"text|{terminology.concept_text(concept).strip().lower()}"]
    assert quiet._codes(concept) == expected
