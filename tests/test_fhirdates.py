"""fhirdates.parse reads the two common spellings with datetime's own parser: it must answer
exactly what the general FHIR pattern answers, for those and for everything near them."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from cds_service.fhirdates import parse

# The general reading, as fhirdates had it before the fast path (the reference).
_REFERENCE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"([T ](?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(\.\d+)?)?(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)


def reference(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _REFERENCE.match(value.strip())
    if not match:
        return None
    g = match.groupdict()
    try:
        moment = datetime(
            int(g["y"]),
            int(g["m"] or 1),
            int(g["d"] or 1),
            int(g["H"] or 0),
            int(g["M"] or 0),
            int(g["S"] or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    tz = g["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        moment -= timedelta(minutes=sign * (int(digits[:2]) * 60 + int(digits[2:])))
    return moment


EDGES = [
    "2026-11-10",
    "2026-11-10T08:30:00Z",
    " 2026-11-10T08:30:00Z\n",
    "2024-02-29",
    "2023-02-29",
    "2024-02-30T10:00:00Z",
    "2024-00-01",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T10:00:60Z",
    "2024-01-01t10:00:00z",
    "2024-01-01T10:00:00.5Z",
    "2024-01-01T10:00:00+02:00",
    "2024-01-01 10:00",
    "٢٠٢٤-01-01T10:00:00Z",  # Arabic-Indic digits: \d reads them
    "2024",
    "2024-05",
    "",
    None,
    20240101,
]


@pytest.mark.parametrize("value", EDGES)
def test_edges(value):
    got, want = parse(value), reference(value)
    assert got == want and (got is None or got.tzinfo is want.tzinfo)


def test_fuzzed_near_the_common_spellings():
    rng = random.Random(15)  # noqa: S311 - reproducible fuzz, not secrets
    alphabet = "0123456789-T: Z+.\n٣x"
    for _ in range(20_000):
        chars = list(rng.choice(EDGES[:14]))
        for _ in range(rng.randint(0, 3)):
            if chars and rng.random() < 0.5:
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            else:
                chars.insert(rng.randint(0, len(chars)), rng.choice(alphabet))
        value = "".join(chars)
        assert parse(value) == reference(value), value


def test_hour_24_never_takes_the_fast_path():
    # Python 3.14's datetime.fromisoformat reads T24:00:00 as the next midnight; FHIR has no
    # hour 24, so such a date must stay unreadable whatever the interpreter.
    from cds_service.fhirdates import _COMMON

    assert _COMMON.fullmatch("2026-11-19T23:00:00Z")
    assert not _COMMON.fullmatch("2026-11-19T24:00:00Z")
    assert parse("2026-11-19T24:00:00Z") is None
