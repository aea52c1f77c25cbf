"""FHIR date, dateTime and instant values as aware datetimes (partial dates allowed)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

# Year, month, day, hour, minute, second, zone. Positional groups: `groups()` is cheaper than
# `groupdict()`, and the chart parses a date for every record it classifies.
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?"
)
# The two spellings nearly every record uses, `2026-11-10` and `2026-11-10T08:30:00Z`, in ASCII
# digits: read by datetime's own parser, a third of the cost of the general pattern above (and
# the same moment: a date alone is its first instant in UTC).
# The hour is 00-23 here: Python 3.14's parser reads `T24:00:00` as the next midnight, which
# FHIR does not allow (the general pattern's reading refuses it).
_COMMON = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}Z)?")


def parse(value: object) -> datetime | None:
    """`2024`, `2024-05`, `2024-05-02`, or a full dateTime; None when it is not a FHIR date.

    A partial date stands for its first instant; a time without a zone is taken as UTC.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _COMMON.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:  # not a calendar date: the general reading below says so too
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    match = _DATE.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, tz = match.groups()
    try:
        if hour is None:
            moment = datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        else:
            moment = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                tzinfo=UTC,
            )
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 60 + int(digits[2:]))

        moment -= timedelta(minutes=offset)
    return moment


def parse_date(value: object) -> date | None:
    moment = parse(value)
    return moment.date() if moment else None
