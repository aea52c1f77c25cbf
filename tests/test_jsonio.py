"""cds_service/jsonio.py: orjson's speed, `json`'s values and refusals (issue 15)."""

from __future__ import annotations

import json

import pytest

from cds_service import jsonio


def _json(raw: bytes) -> object:
    return json.loads(raw.decode("utf-8"))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, 2.5, -0.0, 1e-7, true, null, "x\\u00e9\\ud83d\\ude00"]}',
        b'{"a": 1, "a": 2}',  # the last one wins, as in `json`
        b" [1] \n",
        b"123456789012345678",  # 18 digits: orjson's
        b'"\\u0000"',
    ],
)
def test_orjson_reads_what_json_reads(raw):
    value = jsonio.fast_loads(raw)
    assert value == _json(raw)
    assert type(value) is type(_json(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"1234567890123456789",  # 19 digits: just past what is always read as json reads it
        b"-9999999999999999999",  # orjson: -1e19, a float
        b"18446744073709551616",  # orjson: a float
        b"1" * 40,
        b"1e400",  # `json`: infinity
        b"NaN",
        b'["\\ud800"]',  # a lone surrogate escape
        b"\xef\xbb\xbf{}",  # a byte order mark
        b'"\xed\xa0\x80"',  # not UTF-8
        b"[" * 2000 + b"]" * 2000,  # deeper than orjson reads
        b"",
        b"[1,]",
    ],
)
def test_the_rest_goes_to_json(raw):
    """What orjson refuses, or would read as another value, is read by `json` instead."""
    with pytest.raises(jsonio.Fallback):
        jsonio.fast_loads(raw)


def test_eighteen_digits_stay_with_orjson():
    """Just inside the digit run that sends a body to `json`."""
    assert jsonio.fast_loads(b"[999999999999999999]") == [999999999999999999]


def test_dumps_is_compact_utf8_like_json():
    value = {"summary": "Potassium 2.9 mmol/L – “low”", "n": [1, 2.5, None, True], "e": {}}
    assert jsonio.dumps(value) == json.dumps(
        value, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_dumps_writes_what_orjson_cannot():
    """A lone surrogate (from a FHIR server) as its escape; an integer beyond 64 bits whole."""
    assert jsonio.dumps({"a": "x\ud800"}) == b'{"a":"x\\ud800"}'
    assert jsonio.dumps([10**30]) == b"[" + str(10**30).encode() + b"]"
    assert json.loads(jsonio.dumps({"a": "x\ud800"})) == {"a": "x\ud800"}


def test_loads_reads_an_escaped_lone_surrogate():
    assert jsonio.loads('{"reference": "Patient/\\ud800"}') == {"reference": "Patient/\ud800"}
