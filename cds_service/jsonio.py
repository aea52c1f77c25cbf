"""JSON in and out, fast: orjson where it reads and writes exactly what `json` would.

`parse` takes a request body: orjson reads it when it can, and anything orjson refuses or
would read differently (an integer beyond 64 bits, which orjson turns into a float; a number
beyond the double range; NaN; a lone surrogate; a byte order mark; invalid UTF-8; nesting past
orjson's limit) is read by `json` as before, so a body gets the same value, or the same
refusal, as it did. `dumps` writes UTF-8 bytes (`json` writes what orjson cannot: a lone
surrogate as its escape, an integer beyond 64 bits). `loads` is for the service's own JSON.
"""

from __future__ import annotations

import json

import orjson

# orjson reads an integer beyond 64 bits as a float; `json` keeps it an integer (19 digits
# and more go to `json`: -9999999999999999999 is already beyond). Found by mapping every digit
# to 0 and all else to a space, then looking for nineteen 0s: 5 us for the typical 10 KB body,
# where the regex [0-9]{19} took 125 us (it restarts at every byte).
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19


class Fallback(Exception):
    """orjson cannot read this body as `json` does: read it with `json`."""


def fast_loads(raw: bytes) -> object:
    """The body as orjson reads it, or Fallback when `json` must read it instead."""
    if _LONG_RUN in raw.translate(_DIGITS_AS_ZERO):
        raise Fallback()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Fallback() from None


def loads(text: str | bytes) -> object:
    """The service's own JSON (templates, stored rows): no request body. What orjson refuses
    (an escaped lone surrogate, say, from a patient id the CLI read) `json` reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON (`separators=(",", ":")`, `ensure_ascii=False`)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # a lone surrogate, an integer beyond 64 bits
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        # A lone UTF-16 surrogate (e.g. from a FHIR server's `\ud800`) cannot be UTF-8
        # encoded: written as its JSON escape, the text stays valid UTF-8 JSON of that value.
        return text.encode("utf-8", "backslashreplace")
