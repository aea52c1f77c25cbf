"""Words cards.py works out faster than the obvious way: the same text (and the same errors)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from cds_service import cards

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def test_card_and_suggestion_uuids_are_uuid5():
    names = [f"{i:x}-hook/{rule}" for i in range(3000) for rule in ("a", "é", "")]
    for name in names:
        card = str(uuid.uuid5(cards.CARD_NAMESPACE, name))
        assert cards._card_uuid(name) == card
        assert cards.uuid5(cards.CARD_NAMESPACE, name) == card
        suggestion = str(uuid.uuid5(uuid.UUID(card), "suggestion-0"))
        assert cards.uuid5(card, "suggestion-0") == suggestion


def day_as_read(day: str | None, now: datetime) -> str:
    """shown_day as it was first written: the month and day of month read as numbers."""
    if not day or len(day) < 10:
        return day or ""
    year, month, dom = day[:4], int(day[5:7]), int(day[8:10])
    text = f"{dom} {cards.MONTHS[month - 1]}"
    return text if year == str(now.year) else f"{text} {year}"


def outcome(function, day: str | None) -> str:
    try:
        return function(day, NOW)
    except (ValueError, IndexError) as error:
        return f"{type(error).__name__}: {error}"


ODD_DAYS = [None, "", "2026", "2026-11-1", "2026-11-18x", "abcd-ef-gh", "2026-1\u0661-05"]


@pytest.mark.parametrize("year", ["2026", "2025", "0000"])
def test_shown_day_is_the_day_read_as_numbers(year):
    months = ["00", "01", "09", "10", "12", "13", "1 ", "+1", "-1", "1_"]
    doms = ["00", "01", "09", "10", "29", "31", "32", "99", " 1", "1 ", "0_"]
    days = [f"{year}-{m}-{d}{tail}" for m in months for d in doms for tail in ("", "T10:00:00Z")]
    for day in [*days, *ODD_DAYS]:
        assert outcome(cards.shown_day, day) == outcome(day_as_read, day), day


def test_every_rules_card_text_is_prepared_at_start_and_a_broken_card_fails_there(monkeypatch):
    cards.prepare()
    assert cards._card_text.cache_info().currsize == len(cards.content().cards)

    real = cards.content()
    rule_id = next(iter(real.cards))
    broken = {k: v for k, v in real.cards[rule_id].items() if k != "source"}
    monkeypatch.setattr(
        cards, "content", lambda: cards.Content(real.common, {**real.cards, rule_id: broken})
    )
    cards._card_text.cache_clear()
    try:
        with pytest.raises(KeyError, match="source"):
            cards.prepare()
    finally:
        monkeypatch.undo()
        cards._card_text.cache_clear()
        cards.prepare()
