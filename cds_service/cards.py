"""Cards: a Finding plus the content under `cards/` becomes a CDS Hooks card.

Every word a clinician reads comes from `cards/`: one YAML file per rule id (summaries,
paragraphs and suggestions switched by the finding's flags with `when:` / `unless:`), and
`cards/_common.yaml` for what all cards share: how each kind of evidence is labelled, where a
finding came from, short names of code systems, what could not be read, the override reasons.

A summary may quote `{decisive}` (the finding that decided, with its value and date, e.g.
"Potassium 2.9 mmol/L (18 Nov)") and `{reasons}` (the finding's reasons by their short names).
The detail lists the evidence as a clinician writes it: name, value, date, where it came from
and at most a short code label; each finding once (its latest date, "x3" when repeated). The
reported cramps are shown on the cards that say so (`show_cramps: true`), not on every card.
Suggestion resources use `{patient}` for the patient reference and, in delete actions,
`for_each_order: true` to remove each draft order the finding named.

At note signing, a card whose file says `note_findings: evidence` (its own evidence) or `all`
(with the cramps that triggered it) offers to add what the note says and the record does not
code to the problem list: a provisional Condition per finding, once per response.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import yaml

from . import jsonio
from .chart import Chart, LabResult, NoteFact, Unreadable
from .content import content_dir
from .errors import ConfigurationError
from .rules.base import Evidence, Finding
from .terminology import SYSTEM_LABELS

MAX_SUMMARY = 139  # CDS Hooks: "<140 characters"
# libyaml's safe loader when PyYAML was built with it (ten times faster at start-up).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CARD_NAMESPACE = uuid.UUID("4b1d3f9e-58c1-4f53-9d0a-5f6f8a3c2e10")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class Content:
    common: dict
    cards: dict[str, dict]


@cache
def content() -> Content:
    cards, common = {}, {}
    for item in sorted(content_dir("cards").glob("*.yaml")):
        document = yaml.load(item.read_text("utf-8"), Loader=_LOADER)  # noqa: S506 (a safe loader)
        if item.name == "_common.yaml":
            common = document
        else:
            cards[document["rule"]] = document
            _check_quiet_days(item.name, document.get("quiet_days"))
    return Content(common, cards)


QUIET_INDICATORS = ("warning", "info")  # a critical card is never quieted
MAX_QUIET_DAYS = 365


def _check_quiet_days(name: str, days: object) -> None:
    """`quiet_days: {warning: 7, info: 30}`: days per non-critical indicator, 1 to 365."""
    if days is None:
        return
    if not isinstance(days, dict) or not days:
        raise ConfigurationError(f"cards/{name}: quiet_days must map indicators to days")
    for indicator, count in days.items():
        if indicator not in QUIET_INDICATORS:
            raise ConfigurationError(
                f"cards/{name}: quiet_days may name {' and '.join(QUIET_INDICATORS)} only, "
                f"not {indicator!r} (a critical card is never quieted)"
            )
        whole = isinstance(count, int) and not isinstance(count, bool)
        if not whole or not 1 <= count <= MAX_QUIET_DAYS:
            raise ConfigurationError(
                f"cards/{name}: quiet_days {indicator} must be a whole number of days, "
                f"1 to {MAX_QUIET_DAYS}"
            )


def quiet_days(rule_id: str, indicator: str) -> int | None:
    """How many days feedback quiets this rule's card of this indicator; None: never."""
    if indicator not in QUIET_INDICATORS:
        return None
    text = content().cards.get(rule_id) or {}
    return (text.get("quiet_days") or {}).get(indicator)


def render(findings: list[Finding], trigger: list[Evidence], chart: Chart, hook_instance: str):
    offered: set[str] = set()  # note findings already offered for the problem list
    return [_card(f, trigger, chart, hook_instance, offered) for f in findings]


def _applies(item: dict, flags: frozenset[str]) -> bool:
    if "when" in item and item["when"] not in flags:
        return False
    return not ("unless" in item and item["unless"] in flags)


# --- words -------------------------------------------------------------------------------


def shown_day(day: str | None, now: datetime) -> str:
    """ "18 Nov" this year, "18 Nov 2025" before; "" when unknown."""
    if not day or len(day) < 10:
        return day or ""
    year, month, dom = day[:4], int(day[5:7]), int(day[8:10])
    text = f"{dom} {MONTHS[month - 1]}"
    return text if year == str(now.year) else f"{text} {year}"


def _code_label(evidence: Evidence) -> str:
    """ "ICD-10-CM M54.41": the short label of the code that matched, when one did."""
    coding = evidence.coding or (evidence.match.coding if evidence.match else None)
    if coding is None or (evidence.match and isinstance(evidence.match.fact, NoteFact)):
        return ""
    system = SYSTEM_LABELS.get(coding.system)
    return f"{system} {coding.code}" if system else ""


def _source(evidence: Evidence) -> str:
    sources = content().common["sources"]
    if evidence.result is not None:
        return sources["lab-by-name" if evidence.result.by_name else evidence.result.fact.source]
    if evidence.match is not None:
        if evidence.match.by_name:
            return sources["by-name"]
        return sources.get(evidence.match.fact.source, "")
    for kind in ("medication", "allergy", "order"):
        if getattr(evidence, kind) is not None:
            return sources[kind]
    return ""


def _name(evidence: Evidence) -> str:
    """What the record is called, with its value: "Potassium 2.9 mmol/L", "“numb bum”"."""
    if evidence.result is not None:
        return lab_text(evidence.result)
    if evidence.match is not None:
        fact = evidence.match.fact
        if isinstance(fact, NoteFact):
            return f"“{fact.shown_quote}”"
        return fact.name
    for item in (evidence.medication, evidence.allergy, evidence.order):
        if item is not None:
            return item.name
    return ""


def _values(evidence: Evidence, chart: Chart) -> dict[str, str]:
    values = dict(evidence.values)
    if "due" in values:
        values["due"] = shown_day(values["due"], chart.now)
    return values


def _number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _recorded_decimals(number: float) -> int:
    text = repr(number)
    return 0 if "e" in text or text.endswith(".0") else len(text.partition(".")[2])


def lab_text(result: LabResult) -> str:
    """ "Potassium 2.9 mmol/L", "Temperature 38.4 °C (101.2 °F)": the analyte, its value in the
    threshold unit as a clinician writes it, and the value as recorded when converting changed
    it. A value keeps the decimals it was recorded with (2.99 stays 2.99)."""
    common = content().common
    units = common["units"]
    lab = result.lab
    unit = units.get(lab.unit, lab.unit)
    if result.same_unit:  # shown as recorded, the unit spelled as a clinician writes it
        decimals = max(lab.decimals, _recorded_decimals(result.number))
        value = f"{_number(result.number, decimals)} {units.get(result.unit, result.unit)}"
    else:
        recorded = units.get(result.unit, result.unit)
        value = f"{_number(result.value, lab.decimals)} {unit} ({result.number:g} {recorded})"
    return f"{common['labs'][lab.value_set]} {value}"


def evidence_line(evidence: Evidence, chart: Chart, count: int = 1, name: str | None = None) -> str:
    """One line of evidence: "Low potassium: Potassium 3.2 mmol/L (lab, 18 Nov)". `name` is
    `_name(evidence)` when the caller has it already."""
    label = content().common["evidence"][evidence.label].format_map(_values(evidence, chart))
    name = _name(evidence) if name is None else name
    where = [
        part
        for part in (
            _source(evidence),
            shown_day(evidence.day, chart.now),
            _code_label(evidence),
            f"x{count}" if count > 1 else "",
        )
        if part
    ]
    text = f"{label}: {name}" if name and name.lower() != label.lower() else label
    return f"{text} ({', '.join(where)})" if where else text


def _evidence_lines(items: list[Evidence], chart: Chart) -> list[str]:
    """Each finding once: the latest of those with the same label and name, counted."""
    seen: dict[tuple[str, str], list[tuple[Evidence, str]]] = {}
    for item in items:
        name = _name(item)
        seen.setdefault((item.label, name.lower()), []).append((item, name))
    lines = []
    for group in seen.values():
        latest, name = max(group, key=lambda pair: pair[0].day or "")
        lines.append(evidence_line(latest, chart, len(group), name))
    return list(dict.fromkeys(lines))


def decisive_text(evidence: Evidence | None, chart: Chart) -> str:
    """The decisive finding for a summary: "Potassium 2.9 mmol/L (18 Nov)"."""
    if evidence is None:
        return ""
    name = _name(evidence)
    if not name or (evidence.match is not None and isinstance(evidence.match.fact, NoteFact)):
        name = content().common["evidence"][evidence.label].format_map(_values(evidence, chart))
        if evidence.match is not None and isinstance(evidence.match.fact, NoteFact):
            name += " " + content().common["in_note"]
    day = shown_day(evidence.day, chart.now)
    return f"{name} ({day})" if day else name


def unreadable_line(item: Unreadable, chart: Chart) -> str:
    values = {"subject": item.subject, "day": shown_day(item.day, chart.now), **dict(item.values)}
    text = content().common["unreadable"][item.reason].format_map(values)
    return " ".join(text.replace(" ()", "").split())


# --- the card ----------------------------------------------------------------------------


def _card(
    finding: Finding,
    trigger: list[Evidence],
    chart: Chart,
    hook_instance: str,
    offered: set[str] | None = None,
) -> dict:
    common = content().common
    text = content().cards[finding.rule_id]
    shows_cramps = bool(text.get("show_cramps"))
    values = {
        "decisive": decisive_text(finding.decisive, chart),
        "decisive_day": shown_day(finding.decisive.day if finding.decisive else None, chart.now),
        "reasons": ", ".join(common["reasons"][r] for r in finding.reasons),
    }
    noted = _noted(finding.evidence, chart)
    noted_trigger = _noted(trigger, chart) if text.get("note_findings") == "all" else []
    summary = next(
        (s["text"] for s in text.get("summaries", []) if _applies(s, finding.flags)),
        text["summary"],
    )
    card_uuid = uuid5(CARD_NAMESPACE, f"{hook_instance}/{finding.rule_id}")
    evidence = [*trigger, *finding.evidence] if shows_cramps else list(finding.evidence)
    card: dict = {
        "uuid": card_uuid,
        "summary": fit_summary(summary, values),
        "indicator": finding.indicator,
        "detail": _detail(text, finding, evidence, chart, values, bool(noted or noted_trigger)),
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
    summary = template.format_map(values).replace(" ()", "")
    while len(summary) > MAX_SUMMARY and values:
        longest = max(values, key=lambda k: len(values[k]))
        value = values[longest]
        if len(value) <= 1:
            break
        keep = max(0, len(value) - (len(summary) - MAX_SUMMARY) - 1)
        values = {**values, longest: value[:keep].rstrip(" ,;(") + "…"}
        summary = template.format_map(values)
    return summary[:MAX_SUMMARY]


def _detail(
    text: dict,
    finding: Finding,
    evidence: list[Evidence],
    chart: Chart,
    values: dict,
    from_note: bool = False,
) -> str:
    common = content().common
    lines = [text["detail"].strip().format_map(values)]
    for paragraph in text.get("paragraphs") or []:
        if _applies(paragraph, finding.flags):
            lines += ["", paragraph["text"].strip().format_map(values)]
    if from_note:
        lines += ["", " ".join(common["from_note"]["paragraph"].split())]
    found = _evidence_lines(evidence, chart)
    if found:
        lines += ["", f"**{common['headings']['evidence']}**", ""]
        lines += [f"- {line}" for line in found]
    cannot_read = [unreadable_line(u, chart) for u in (*finding.missing, *chart.unreadable)]
    gaps = [common["gaps"][g.reason].format(key=g.key, detail=g.detail) for g in chart.gaps]
    cannot_read = list(dict.fromkeys([*cannot_read, *gaps]))
    if cannot_read:
        lines += ["", f"**{common['headings']['unreadable']}**", ""]
        lines += [f"- {item}" for item in cannot_read]
    lines += ["", f"**{common['headings']['sources']}** {text['guideline']}"]
    return "\n".join(lines)


def uuid5(namespace: uuid.UUID | str, name: str) -> str:
    """str(uuid.uuid5(namespace, name)), without making UUID objects (a card and each of its
    suggestions take one)."""
    space = (
        namespace.bytes
        if isinstance(namespace, uuid.UUID)
        else bytes.fromhex(namespace.replace("-", ""))
    )
    digest = bytearray(hashlib.sha1(space + name.encode("utf-8")).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _suggestion(template: dict, card_uuid: str, index: int, chart: Chart, finding: Finding):
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
        "uuid": uuid5(card_uuid, f"suggestion-{index}"),
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


def _problem_list(facts: list[NoteFact], card_uuid: str, index: int) -> dict:
    """One suggestion: a provisional Condition for each finding the note reports."""
    wording = content().common["from_note"]
    return {
        "label": wording["suggestion_label"],
        "uuid": uuid5(card_uuid, f"suggestion-{index}"),
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
        "resource": jsonio.loads(text.replace(PATIENT_JSON, patient)),
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
