"""Cards: a Finding plus the content under `cards/` becomes a CDS Hooks card."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from functools import cache

import yaml

from .chart import Chart
from .content import content_dir
from .rules.base import Evidence, Finding

CARD_NAMESPACE = uuid.UUID("4b1d3f9e-58c1-4f53-9d0a-5f6f8a3c2e10")


@dataclass(frozen=True)
class Content:
    common: dict
    cards: dict[str, dict]


@cache
def content() -> Content:
    cards, common = {}, {}
    for item in sorted(content_dir("cards").glob("*.yaml")):
        document = yaml.safe_load(item.read_text("utf-8"))
        if item.name == "_common.yaml":
            common = document
        else:
            cards[document["rule"]] = document
    return Content(common, cards)


def render(findings: list[Finding], trigger: list[Evidence], chart: Chart, hook_instance: str):
    return [_card(f, trigger, chart, hook_instance) for f in findings]


def _card(finding: Finding, trigger: list[Evidence], chart: Chart, hook_instance: str) -> dict:
    common = content().common
    text = content().cards[finding.rule_id]
    card_uuid = uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}/{finding.rule_id}")
    card: dict = {
        "uuid": str(card_uuid),
        "summary": text["summary"],
        "indicator": finding.indicator,
        "detail": _detail(text, finding, trigger, chart),
        "source": {
            "label": text["source"]["label"],
            "url": text["source"]["url"],
            "topic": {
                "system": common["topic_system"],
                "code": finding.rule_id,
                "display": text["source"]["topic_display"],
            },
        },
    }
    suggestions = [
        _suggestion(s, card_uuid, i, chart) for i, s in enumerate(text.get("suggestions") or [])
    ]
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = text["selectionBehavior"]
    if finding.indicator in {"warning", "critical"}:
        reasons = common["override_reasons"] + (text.get("extra_override_reasons") or [])
        card["overrideReasons"] = [
            {"system": common["override_reason_system"], "code": r["code"], "display": r["display"]}
            for r in reasons
        ]
    if text.get("links"):
        card["links"] = [
            {"label": link["label"], "url": link["url"], "type": "absolute"}
            for link in text["links"]
        ]
    return card


def _detail(text: dict, finding: Finding, trigger: list[Evidence], chart: Chart) -> str:
    lines = [text["detail"].strip(), "", "**Evidence found**", ""]
    lines += [f"- {e.markdown()}" for e in [*trigger, *finding.evidence]]
    cannot_read = [*finding.missing, *chart.gaps]
    if cannot_read:
        lines += ["", "**Could not be read**", ""]
        lines += [f"- {item}" for item in cannot_read]
    lines += ["", f"**Guideline:** {text['guideline']}"]
    return "\n".join(lines)


def _suggestion(template: dict, card_uuid: uuid.UUID, index: int, chart: Chart) -> dict:
    suggestion = {
        "label": template["label"],
        "uuid": str(uuid.uuid5(card_uuid, f"suggestion-{index}")),
        "actions": [_fill(copy.deepcopy(a), chart) for a in template["actions"]],
    }
    if "isRecommended" in template:
        suggestion["isRecommended"] = bool(template["isRecommended"])
    return suggestion


def _fill(value, chart: Chart):
    """Put the patient into a suggestion template (`{patient}` stands for Patient/<id>)."""
    if isinstance(value, dict):
        return {k: _fill(v, chart) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, chart) for v in value]
    if value == "{patient}":
        return chart.patient_reference
    return value
