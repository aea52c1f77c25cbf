"""A card's plan (cards._plan: its summary, paragraphs and suggestions chosen once per rule and
set of flags) says what choosing them afresh from the card's content says, for every rule and
every combination of the switches its content names."""

from __future__ import annotations

import itertools

from cds_service import cards


def _switches(document: dict) -> list[str]:
    items = [*document.get("summaries", []), *(document.get("paragraphs") or [])]
    items += document.get("suggestions") or []
    names = {item[key] for item in items for key in ("when", "unless") if key in item}
    return sorted(names)


def _applies(item: dict, flags: frozenset[str]) -> bool:
    """`when:` a flag that must be set, `unless:` one that must not."""
    if "when" in item and item["when"] not in flags:
        return False
    return "unless" not in item or item["unless"] not in flags


def _chosen(document: dict, flags: frozenset[str]) -> tuple:
    summary = next(
        (s["text"] for s in document.get("summaries", []) if _applies(s, flags)),
        document["summary"],
    )
    paragraphs = [document["detail"].strip()] + [
        p["text"].strip() for p in document.get("paragraphs") or [] if _applies(p, flags)
    ]
    labels = [s["label"] for s in document.get("suggestions") or [] if _applies(s, flags)]
    return summary, paragraphs, labels


def test_every_plan_chooses_what_the_content_says():
    checked = 0
    for rule_id, document in cards.content().cards.items():
        switches = _switches(document)
        for size in range(len(switches) + 1):
            for on in itertools.combinations(switches, size):
                flags = frozenset(on) | {"not-a-switch"}
                plan = cards._plan(rule_id, flags)
                summary, paragraphs, labels = _chosen(document, flags)
                assert plan.summary == summary, (rule_id, on)
                assert [block for block, _ in plan.blocks] == paragraphs, (rule_id, on)
                assert plan.head in (None, "\n\n".join(paragraphs)), (rule_id, on)
                assert (plan.head is None) == any("{" in p or "}" in p for p in paragraphs)
                assert [s.label for s in plan.suggestions] == labels, (rule_id, on)
                checked += 1
    assert checked > len(cards.content().cards)


def test_a_plan_follows_card_text_read_afresh():
    """Plans are remembered per rule and flags; card text read again (its cache cleared, as
    tests and a reload do) must not be answered from a plan made of the old text."""
    rule_id = next(iter(cards.content().cards))
    before = cards._plan(rule_id, frozenset())
    assert before.text is cards._card_text(rule_id)
    cards._card_text.cache_clear()
    try:
        after = cards._plan(rule_id, frozenset())
        assert after.text is cards._card_text(rule_id)
        assert after.text is not before.text
    finally:
        cards._card_text.cache_clear()
