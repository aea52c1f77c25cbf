"""FHIR date, dateTime and instant values as aware datetimes (partial dates allowed)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_DATE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"([T ](?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(\.\d+)?)?(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)


def parse(value: object) -> datetime | None:
    """`2024`, `2024-05`, `2024-05-02`, or a full dateTime; None when it is not a FHIR date.

    A partial date stands for its first instant; a time without a zone is taken as UTC.
    """
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
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
        offset = sign * (int(digits[:2]) * 60 + int(digits[2:]))

        moment -= timedelta(minutes=offset)
    return moment


def parse_date(value: object) -> date | None:
    moment = parse(value)
    return moment.date() if moment else None
