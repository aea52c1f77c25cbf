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


def parse(value: object) -> datetime | None:
    """`2024`, `2024-05`, `2024-05-02`, or a full dateTime; None when it is not a FHIR date.

    A partial date stands for its first instant; a time without a zone is taken as UTC.
    """
    if not isinstance(value, str):
        return None
    match = _DATE.fullmatch(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, tz = match.groups()
    try:
        if hour is None:
            moment = datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        else:
            moment = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=UTC
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
