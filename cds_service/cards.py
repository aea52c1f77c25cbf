"""Cards: a Finding plus the content under `cards/` becomes a CDS Hooks card.

Card files are YAML, one per rule id. Text may quote a finding's values (`{drugs}`), and
paragraphs and suggestions may be switched by the finding's flags (`when:` / `unless:`).
Suggestion resources use `{patient}` for the patient reference and, in delete actions,
`for_each_order: true` to remove each draft order the finding named.

At note signing, evidence read from the draft note's text gets a paragraph saying so, and a card
whose file says `note_findings: evidence` (its own evidence) or `all` (with the cramps that
triggered it) offers to add what the note says and the record does not code to the problem
list: a provisional Condition per finding, each offered once per response (on the first card).
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from functools import cache

import yaml

from .chart import Chart, NoteFact
from .content import content_dir
from .rules.base import Evidence, Finding

MAX_SUMMARY = 139  # CDS Hooks: "<140 characters"
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
    offered: set[str] = set()  # note findings already offered for the problem list
    return [_card(f, trigger, chart, hook_instance, offered) for f in findings]


def _applies(item: dict, flags: frozenset[str]) -> bool:
    if "when" in item and item["when"] not in flags:
        return False
    return not ("unless" in item and item["unless"] in flags)


def _card(
    finding: Finding,
    trigger: list[Evidence],
    chart: Chart,
    hook_instance: str,
    offered: set[str] | None = None,
) -> dict:
    common = content().common
    text = content().cards[finding.rule_id]
    values = dict(finding.values)
    noted = _noted(finding.evidence, chart)
    noted_trigger = _noted(trigger, chart)
    summary = next(
        (s["text"] for s in text.get("summaries", []) if _applies(s, finding.flags)),
        text["summary"],
    )
    card_uuid = uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}/{finding.rule_id}")
    card: dict = {
        "uuid": str(card_uuid),
        "summary": fit_summary(summary, values),
        "indicator": finding.indicator,
        "detail": _detail(text, finding, trigger, chart, values, bool(noted or noted_trigger)),
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
    templates = [s for s in text.get("suggestions") or [] if _applies(s, finding.flags)]
    suggestions = [_suggestion(s, card_uuid, i, chart, finding) for i, s in enumerate(templates)]
    scope = {"evidence": noted, "all": noted_trigger + noted}.get(text.get("note_findings"), [])
    to_offer = _to_offer(scope, set() if offered is None else offered)
    if to_offer:
        suggestions.append(_problem_list(to_offer, card_uuid, len(templates)))
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = text.get("selectionBehavior", "any")
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


def fit_summary(template: str, values: dict) -> str:
    """The summary with its values, shortened so that it stays under 140 characters."""
    summary = template.format_map(values)
    while len(summary) > MAX_SUMMARY and values:
        longest = max(values, key=lambda k: len(values[k]))
        value = values[longest]
        if len(value) <= 1:
            break
        keep = max(0, len(value) - (len(summary) - MAX_SUMMARY) - 1)
        values = {**values, longest: value[:keep].rstrip(" ,;") + "…"}
        summary = template.format_map(values)
    return summary[:MAX_SUMMARY]


def _detail(
    text: dict, finding: Finding, trigger, chart: Chart, values: dict, from_note: bool = False
) -> str:
    lines = [text["detail"].strip().format_map(values)]
    for paragraph in text.get("paragraphs") or []:
        if _applies(paragraph, finding.flags):
            lines += ["", paragraph["text"].strip().format_map(values)]
    if from_note:
        lines += ["", " ".join(content().common["from_note"]["paragraph"].split())]
    lines += ["", "**Evidence found**", ""]
    lines += [f"- {e.markdown()}" for e in [*trigger, *finding.evidence]]
    cannot_read = list(dict.fromkeys([*finding.missing, *chart.unreadable, *chart.gaps]))
    if cannot_read:
        lines += ["", "**Could not be read**", ""]
        lines += [f"- {item}" for item in cannot_read]
    lines += ["", f"**Guideline:** {text['guideline']}"]
    return "\n".join(lines)


def _suggestion(template: dict, card_uuid: uuid.UUID, index: int, chart: Chart, finding: Finding):
    actions = []
    for action in template["actions"]:
        if action.get("for_each_order"):
            actions += [
                {
                    "type": "delete",
                    "description": action["description"].format(order=reference),
                    "resourceId": reference,
                }
                for reference in finding.orders
            ]
        else:
            actions.append(_action(action, chart))
    suggestion = {
        "label": template["label"],
        "uuid": str(uuid.uuid5(card_uuid, f"suggestion-{index}")),
        "actions": actions,
    }
    if "isRecommended" in template:
        suggestion["isRecommended"] = bool(template["isRecommended"])
    return suggestion


def _noted(evidence: list[Evidence] | tuple[Evidence, ...], chart: Chart) -> list[NoteFact]:
    """The draft-note findings a list of evidence quotes, in order, each once."""
    facts = (chart.note_fact(e.reference) for e in evidence)
    return list({f.reference: f for f in facts if f is not None}.values())


def _to_offer(facts: list[NoteFact], offered: set[str]) -> list[NoteFact]:
    """The note findings this card may offer for the problem list: current, not coded, with a
    catalog code, one per concept, and not offered by an earlier card of the response."""
    chosen: dict[str, NoteFact] = {}
    for fact in facts:
        concept = fact.finding.concept if fact.finding else fact.reference
        if fact.offered and fact.reference not in offered and concept not in chosen:
            chosen[concept] = fact
    offered.update(f.reference for f in chosen.values())
    return list(chosen.values())


def _problem_list(facts: list[NoteFact], card_uuid: uuid.UUID, index: int) -> dict:
    """One suggestion: a provisional Condition for each finding the note reports."""
    wording = content().common["from_note"]
    return {
        "label": wording["suggestion_label"],
        "uuid": str(uuid.uuid5(card_uuid, f"suggestion-{index}")),
        "actions": [
            {
                "type": "create",
                "description": wording["action_description"].format(finding=fact.code["text"]),
                "resource": copy.deepcopy(fact.resource),
            }
            for fact in facts
        ],
    }


def _action(template: dict, chart: Chart) -> dict:
    """A create action; its resource is inline or a shared one (`resource_ref`) with overrides."""
    text = _resource_json(id(template))
    patient = json.dumps(chart.patient_reference)
    return {
        "type": template["type"],
        "description": template["description"],
        "resource": json.loads(text.replace(PATIENT_JSON, patient)),
    }


PATIENT_JSON = '"{patient}"'  # in a suggestion template: the patient's reference


@cache
def _resource_json(template_id: int) -> str:
    """The action's resource as JSON text, made once per template (a fresh copy per card is
    then one json.loads, much cheaper than copying the template)."""
    template = _templates()[template_id]
    if "resource_ref" in template:
        resource = copy.deepcopy(content().common["resources"][template["resource_ref"]])
        resource.update(copy.deepcopy(template.get("overrides") or {}))
    else:
        resource = copy.deepcopy(template["resource"])
    return json.dumps(resource)


@cache
def _templates() -> dict[int, dict]:
    return {
        id(action): action
        for card in content().cards.values()
        for suggestion in card.get("suggestions") or []
        for action in suggestion["actions"]
    }
