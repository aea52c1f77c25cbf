"""Feedback: parsing and the canonical form of an outcome (cds_service.stores stores it once)."""

from __future__ import annotations

from dataclasses import replace

from . import fhirdates, validation
from .errors import InvalidRequest, Issue
from .tolerant import tolerate_feedback

_ITEM_FIELDS = {"card", "outcome", "outcomeTimestamp", "acceptedSuggestions", "overrideReason"}


def parse_feedback(body: object) -> list[dict]:
    """The feedback items of a wrapped `{"feedback": [...]}` body or a single unwrapped one."""
    if not isinstance(body, dict):
        raise InvalidRequest("The feedback body must be a JSON object", "body")
    unwrapped = "feedback" not in body and bool(_ITEM_FIELDS & body.keys())
    if unwrapped:
        body = {"feedback": [body]}
    tolerate_feedback(body)
    issues = validation.problems("feedback", body)
    if issues:
        # An unwrapped item's errors name its own fields (`card`), not `feedback[0].card`.
        raise InvalidRequest([_unwrap(i) for i in issues] if unwrapped else issues)
    return body["feedback"]


# The bounds of what one outcome may store are in schemas/feedback.json (documented in the
# OpenAPI document and README "Hardening"): 100 items, 20 accepted suggestions with ids of 128
# characters, override reason system 256, code 64, display 256, comment 2,000 characters.


def canonical_card(card: str) -> str:
    """A card uuid as the service issues it: lower case, without `urn:uuid:`."""
    card = card.strip()
    if card[:9].lower() == "urn:uuid:":
        card = card[9:]
    return card.lower()


def canonical_timestamp(value: str) -> str:
    """One spelling per instant: UTC, `T` and `Z`, seconds always, a fraction only when it is
    not zero (`12:05:00.000+00:00` and `12:05:00Z` are the same outcome). A date alone stays a
    date. The schema has checked the form."""
    text = value.strip().upper()
    moment = fhirdates.parse(text)
    if moment is None or len(text) <= 10:
        return text
    fraction = ""
    dot = text.find(".", 10)
    if dot >= 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        fraction = text[dot + 1 : end].rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _unwrap(issue: Issue) -> Issue:
    item = "feedback[0]"
    expression = issue.expression
    if expression == item:
        expression = None
    elif expression and expression.startswith(f"{item}."):
        expression = expression.removeprefix(f"{item}.")
    diagnostics = issue.diagnostics
    if diagnostics.startswith(f"{item}."):
        diagnostics = diagnostics.removeprefix(f"{item}.")
    elif diagnostics.startswith(item):
        diagnostics = "body" + diagnostics.removeprefix(item)
    return replace(issue, expression=expression, diagnostics=diagnostics)
