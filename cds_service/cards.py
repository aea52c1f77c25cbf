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
    words = _Words(chart)
    offered: set[str] = set()  # note findings already offered for the problem list
    return [_card(f, trigger, words, hook_instance, offered) for f in findings]


def _applies(item: dict, flags: frozenset[str]) -> bool:
    if "when" in item and item["when"] not in flags:
        return False
    return not ("unless" in item and item["unless"] in flags)


# --- each rule's card content, prepared once ---------------------------------------------
#
# What is the same on every card of a rule (its texts stripped, its source, links and override
# reasons, its suggestions' resources as JSON text) is read out of the YAML once, the first
# time the rule's card is rendered; a card then fills in only what varies with the finding.


@dataclass(frozen=True)
class _Action:
    type: str
    description: str
    # The resource as JSON values (as the template's JSON text reads back: keys are text), and
    # where it quotes the patient (see _patient_paths); None for `for_each_order`: a delete
    # per draft order named.
    resource: dict | None
    patient_paths: tuple = ()


@dataclass(frozen=True)
class _Suggestion:
    switch: dict  # the template, for its `when:` / `unless:` (_applies)
    label: str
    recommended: bool | None  # None: the template says nothing (no isRecommended)
    actions: tuple[_Action, ...]


@dataclass(frozen=True)
class _CardText:
    """A rule's card text, prepared once. `source`, `override_reasons` and `links` are the
    card's JSON values themselves: every card of the rule, in every response, holds these same
    objects (a response is only read and serialised: tests/test_cards_shared.py holds every
    consumer to that)."""

    summary: str
    summaries: tuple[dict, ...]
    detail: str
    # Whether the detail quotes values ({decisive}, ...): most texts quote none, and
    # format_map copies even a text without a field (2 us for a long one).
    detail_quotes: bool
    # (the paragraph, its text stripped, whether that quotes values)
    paragraphs: tuple[tuple[dict, str, bool], ...]
    sources_line: str
    show_cramps: bool
    note_findings: str | None
    source: dict  # label, url, topic (system, the rule id as code, display)
    suggestions: tuple[_Suggestion, ...]
    selection_behavior: str
    override_reasons: list[dict]  # system, code, display
    links: list[dict] | None  # label, url, type; None: the card has no links


def prepare() -> None:
    """Read the card content and prepare every rule's card text now: a broken card file fails
    the start, not a request, and a served worker freezes the prepared text with its other
    start-up objects (server.py)."""
    for rule_id in content().cards:
        _card_text(rule_id)
    _plain_labels()
    _list_heads()


@cache
def _card_text(rule_id: str) -> _CardText:
    common = content().common
    text = content().cards[rule_id]
    source = text["source"]
    reasons = common["override_reasons"] + (text.get("extra_override_reasons") or [])
    detail = text["detail"].strip()
    return _CardText(
        summary=text["summary"],
        summaries=tuple(text.get("summaries", [])),
        detail=detail,
        detail_quotes=_quotes(detail),
        paragraphs=tuple(
            (p, p["text"].strip(), _quotes(p["text"].strip())) for p in text.get("paragraphs") or []
        ),
        sources_line=f"**{common['headings']['sources']}** {text['guideline']}",
        show_cramps=bool(text.get("show_cramps")),
        note_findings=text.get("note_findings"),
        source={
            "label": source["label"],
            "url": source["url"],
            "topic": {
                "system": common["topic_system"],
                "code": rule_id,
                "display": source["topic_display"],
            },
        },
        suggestions=tuple(_prepare_suggestion(s) for s in text.get("suggestions") or []),
        selection_behavior=text.get("selectionBehavior", "any"),
        override_reasons=[
            {"system": common["override_reason_system"], "code": r["code"], "display": r["display"]}
            for r in reasons
        ],
        links=[
            {"label": link["label"], "url": link["url"], "type": "absolute"}
            for link in text.get("links") or []
        ]
        or None,
    )


def _quotes(text: str) -> bool:
    """Whether format_map does anything to this text: a text without a brace comes out of it
    as it went in (one with a brace is formatted, and a stray one refused, as always)."""
    return "{" in text or "}" in text


def _prepare_suggestion(template: dict) -> _Suggestion:
    return _Suggestion(
        switch=template,
        label=template["label"],
        recommended=bool(template["isRecommended"]) if "isRecommended" in template else None,
        actions=tuple(
            _Action("delete", action["description"], None)
            if action.get("for_each_order")
            else _prepare_action(action)
            for action in template["actions"]
        ),
    )


PATIENT = "{patient}"  # in a suggestion template: a value that is the patient's reference


def _prepare_action(template: dict) -> _Action:
    """A create action's resource: inline, or a shared one (`resource_ref`) with overrides;
    read back from its JSON text, so that it holds exactly the values a card's copy of that
    text held (keys as text, lists for tuples)."""
    if "resource_ref" in template:
        resource = copy.deepcopy(content().common["resources"][template["resource_ref"]])
        resource.update(copy.deepcopy(template.get("overrides") or {}))
    else:
        resource = copy.deepcopy(template["resource"])
    resource = json.loads(json.dumps(resource))
    return _Action(template["type"], template["description"], resource, _patient_paths(resource))


def _patient_paths(value: object) -> tuple:
    """Where a resource quotes the patient: for each key (or index) whose value is `{patient}`
    or holds it, that key with the same for its value; () for the patient value itself, and
    for a value without it (then the key is not listed)."""
    if isinstance(value, dict):
        if PATIENT in value:  # only a value may be the patient, never a key
            raise ConfigurationError(f"a suggestion resource has the key {PATIENT!r}")
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return ()
    return tuple(
        (key, _patient_paths(item))
        for key, item in items
        if item == PATIENT or _holds_patient(item)
    )


def _holds_patient(value: object) -> bool:
    if isinstance(value, dict):
        return any(item == PATIENT or _holds_patient(item) for item in value.values())
    if isinstance(value, list):
        return any(item == PATIENT or _holds_patient(item) for item in value)
    return False


def _with_patient(template: object, paths: tuple, patient: object) -> object:
    """The resource with the patient's reference in place of `{patient}`. Only the dicts and
    lists on the way to a patient value are new; the rest (codes, categories) is the
    prepared template's, shared by every card (a response is never changed once rendered)."""
    if template == PATIENT:
        return patient
    if not paths:
        return template
    filled = template.copy()
    for key, inner in paths:
        value = template[key]
        # The patient's own value filled in here, a level up: one call fewer per resource.
        filled[key] = patient if value == PATIENT else _with_patient(value, inner, patient)
    return filled


# --- words -------------------------------------------------------------------------------


def shown_day(day: str | None, now: datetime) -> str:
    """ "18 Nov" this year, "18 Nov 2025" before; "" when unknown."""
    return _shown_day(day, str(now.year))


def _shown_day(day: str | None, this_year: str) -> str:
    if not day or len(day) < 10:
        return day or ""
    year = day[:4]
    text = _DAY_MONTH.get(day[5:10])
    if text is None:  # not "MM-DD" with two digits each: read as numbers, as they always were
        month, dom = int(day[5:7]), int(day[8:10])
        text = f"{dom} {MONTHS[month - 1]}"
    return text if year == this_year else f"{text} {year}"


# "11-18" -> "18 Nov": every month and day of month in two digits, looked up instead of read
# as numbers and formatted (the days of a response are mostly distinct).
_DAY_MONTH = {
    f"{month:02d}-{dom:02d}": f"{dom} {name}"
    for month, name in enumerate(MONTHS, start=1)
    for dom in range(1, 32)
}


class _Words:
    """The words of one response's cards, from one chart. What several cards of the response
    share is worked out once: the days as shown, each piece of evidence's name (the evidence
    objects live as long as the response is rendered, so they are known by id), what the chart
    could not read."""

    def __init__(self, chart: Chart):
        self.chart = chart
        self.common = content().common
        self.sources = self.common["sources"]
        self.plain_labels = _plain_labels()
        self.reasons = self.common["reasons"]
        self.evidence_head, self.unreadable_head = _list_heads()
        self.year = str(chart.now.year)
        self._days: dict[str | None, str] = {}
        self._names: dict[int, str] = {}
        self._cannot_read: list[str] | None = None
        self._noted_trigger: list[NoteFact] | None = None

    def day(self, day: str | None) -> str:
        shown = self._days.get(day)
        if shown is None:
            shown = self._days[day] = _shown_day(day, self.year)
        return shown

    def name(self, evidence: Evidence) -> str:
        name = self._names.get(id(evidence))
        if name is None:
            name = self._names[id(evidence)] = _name(evidence)
        return name

    def label(self, evidence: Evidence) -> str:
        plain = self.plain_labels.get(evidence.label)
        if plain is not None:  # quotes no value: the same text for every piece of evidence
            return plain
        template = self.common["evidence"][evidence.label]
        return template.format_map(self.values(evidence) if evidence.values else _NO_VALUES)

    def values(self, evidence: Evidence) -> dict[str, str]:
        values = dict(evidence.values)
        if "due" in values:
            values["due"] = self.day(values["due"])
        return values

    def line(self, evidence: Evidence, count: int = 1) -> str:
        """One line of evidence: "Low potassium: Potassium 3.2 mmol/L (lab, 18 Nov)"."""
        label = self.plain_labels.get(evidence.label)
        if label is None:
            label = self.label(evidence)
        name = self._names.get(id(evidence))  # most lines name what another line or
        if name is None:  # the summary already named: looked up here, not by a call
            name = self.name(evidence)
        # In brackets: where it came from, its day, the short label of the code that matched
        # (when one did and it is not a note's), the count; those that are known, in this order.
        sources = self.sources
        match, result = evidence.match, evidence.result
        in_note = match is not None and isinstance(match.fact, NoteFact)
        if result is not None:
            source = sources["lab-by-name" if result.by_name else result.fact.source]
        elif match is not None:
            source = sources["by-name"] if match.by_name else sources.get(match.fact.source, "")
        elif evidence.medication is not None:
            source = sources["medication"]
        elif evidence.allergy is not None:
            source = sources["allergy"]
        elif evidence.order is not None:
            source = sources["order"]
        else:
            source = ""
        coding = evidence.coding or (match.coding if match is not None else None)
        code = ""
        if coding is not None and not in_note:
            system = SYSTEM_LABELS.get(coding.system)
            if system:
                code = f"{system} {coding.code}"
        where = ", ".join(  # filter and join: no loop in Python
            filter(None, (source, self.day(evidence.day), code, f"x{count}" if count > 1 else ""))
        )
        text = f"{label}: {name}" if name and name.lower() != label.lower() else label
        return f"{text} ({where})" if where else text

    def evidence_lines(self, items: list[Evidence] | tuple[Evidence, ...]) -> list[str]:
        """Each finding once: the latest of those with the same label and name, counted."""
        if len(items) == 1:  # most cards cite one record: nothing to group
            return [self.line(items[0])]
        seen: dict[tuple[str, str], list[Evidence]] = {}
        for item in items:
            key = (item.label, self.name(item).lower())
            group = seen.get(key)
            if group is None:
                seen[key] = [item]
            else:
                group.append(item)
        if len(seen) == len(items):  # no two alike (the usual case): each line once, in order
            lines = [self.line(item) for item in items]
        else:
            lines = [
                self.line(group[0])
                if len(group) == 1
                else self.line(max(group, key=_day_or_blank), len(group))
                for group in seen.values()
            ]
        return list(dict.fromkeys(lines))

    def decisive(self, evidence: Evidence | None) -> str:
        """The decisive finding for a summary: "Potassium 2.9 mmol/L (18 Nov)"."""
        return self.decisive_and_day(evidence)[0]

    def decisive_and_day(self, evidence: Evidence | None) -> tuple[str, str]:
        """The decisive finding for a summary, and its day as shown (a summary may quote it
        on its own: `{decisive_day}`)."""
        if evidence is None:
            return "", ""
        name = self.name(evidence)
        in_note = evidence.match is not None and isinstance(evidence.match.fact, NoteFact)
        if not name or in_note:
            name = self.label(evidence)
            if in_note:
                name += " " + self.common["in_note"]
        day = self.day(evidence.day)
        return (f"{name} ({day})" if day else name), day

    def unreadable(self, item: Unreadable) -> str:
        values = {"subject": item.subject, "day": self.day(item.day), **dict(item.values)}
        text = self.common["unreadable"][item.reason].format_map(values)
        return " ".join(text.replace(" ()", "").split())

    def cannot_read(self, finding: Finding) -> list[str]:
        """What the card lists as not read: the finding's own, then the chart's (the same on
        every card), each once. Only read by the caller: without the finding's own, it is the
        list every card of the response gets."""
        if self._cannot_read is None:
            chart = self.chart
            gaps = self.common["gaps"]
            self._cannot_read = list(
                dict.fromkeys(
                    [
                        *(self.unreadable(u) for u in chart.unreadable),
                        *(gaps[g.reason].format(key=g.key, detail=g.detail) for g in chart.gaps),
                    ]
                )
            )
        if not finding.missing:
            return self._cannot_read
        own = [self.unreadable(u) for u in finding.missing]
        return list(dict.fromkeys([*own, *self._cannot_read]))

    def noted_trigger(self, trigger: list[Evidence]) -> list[NoteFact]:
        """The draft-note findings the trigger quotes: the same trigger for every card."""
        if self._noted_trigger is None:
            self._noted_trigger = _noted(trigger, self.chart)
        return list(self._noted_trigger)


_NO_VALUES: dict[str, str] = {}  # the values of evidence that quotes none (never written to)


@cache
def _plain_labels() -> dict[str, str]:
    """The evidence labels without a brace: as format_map leaves them, whatever the values."""
    return {key: text for key, text in content().common["evidence"].items() if not _quotes(text)}


def _day_or_blank(evidence: Evidence) -> str:
    return evidence.day or ""


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


def evidence_line(evidence: Evidence, chart: Chart, count: int = 1) -> str:
    """One line of evidence: "Low potassium: Potassium 3.2 mmol/L (lab, 18 Nov)"."""
    return _Words(chart).line(evidence, count)


def decisive_text(evidence: Evidence | None, chart: Chart) -> str:
    """The decisive finding for a summary: "Potassium 2.9 mmol/L (18 Nov)"."""
    return _Words(chart).decisive(evidence)


def unreadable_line(item: Unreadable, chart: Chart) -> str:
    return _Words(chart).unreadable(item)


# --- the card ----------------------------------------------------------------------------


def _card(
    finding: Finding,
    trigger: list[Evidence],
    words: _Words,
    hook_instance: str,
    offered: set[str],
) -> dict:
    chart = words.chart
    plan = _plan(finding.rule_id, finding.flags)
    text = plan.text
    decisive, decisive_day = words.decisive_and_day(finding.decisive)
    reasons = words.reasons
    values = {
        "decisive": decisive,
        "decisive_day": decisive_day,
        "reasons": ", ".join([reasons[r] for r in finding.reasons]) if finding.reasons else "",
    }
    if chart.note_facts:  # a draft note (note signing): the note findings the card may offer
        noted = _noted(finding.evidence, chart)
        noted_trigger = words.noted_trigger(trigger) if text.note_findings == "all" else []
    else:
        noted = noted_trigger = []
    card_uuid = _card_uuid(f"{hook_instance}/{finding.rule_id}")
    evidence = [*trigger, *finding.evidence] if text.show_cramps else finding.evidence
    card: dict = {
        "uuid": card_uuid,
        "summary": fit_summary(plan.summary, values),
        "indicator": finding.indicator,
        "detail": _detail(plan, finding, evidence, words, values, bool(noted or noted_trigger)),
        "source": text.source,
    }
    templates = plan.suggestions
    suggestions = (
        [_suggestion(s, card_uuid, i, words, finding) for i, s in enumerate(templates)]
        if templates
        else []
    )
    if text.note_findings == "evidence":
        scope = noted
    elif text.note_findings == "all":
        scope = noted_trigger + noted
    else:
        scope = []
    to_offer = _to_offer(scope, offered) if scope else []
    if to_offer:
        suggestions.append(_problem_list(to_offer, card_uuid, len(templates)))
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = text.selection_behavior
    card["overrideReasons"] = text.override_reasons
    if text.links:
        card["links"] = text.links
    return card


@dataclass(frozen=True)
class _Plan:
    """What a rule's card says for one set of flags, chosen once: its summary template, the
    detail's paragraphs (joined, when none quotes a value) and its suggestion templates."""

    text: _CardText
    summary: str
    head: str | None  # the detail's paragraphs joined; None: some quote values (see blocks)
    blocks: tuple[tuple[str, bool], ...]  # each paragraph, and whether it quotes values
    suggestions: tuple[_Suggestion, ...]


# Plans by rule id and flags. Flags are the switch names a rule's code sets (rules/base.flags
# takes them as keywords), never request data, so this table stays small: a few entries per
# rule. Filled on first use (two workers' threads making one twice is harmless).
_PLANS: dict[tuple[str, frozenset[str]], _Plan] = {}


def _plan(rule_id: str, flags: frozenset[str]) -> _Plan:
    text = _card_text(rule_id)
    plan = _PLANS.get((rule_id, flags))
    if plan is None or plan.text is not text:  # card text read afresh: so are its plans
        plan = _PLANS[(rule_id, flags)] = _make_plan(text, flags)
    return plan


def _make_plan(text: _CardText, flags: frozenset[str]) -> _Plan:
    blocks = [(text.detail, text.detail_quotes)]
    for paragraph, paragraph_text, quotes in text.paragraphs:
        if _applies(paragraph, flags):
            blocks.append((paragraph_text, quotes))
    quoting = any(quotes for _, quotes in blocks)
    return _Plan(
        text=text,
        summary=_summary(text, flags),
        head=None if quoting else "\n\n".join(block for block, _ in blocks),
        blocks=tuple(blocks),
        suggestions=tuple(s for s in text.suggestions if _applies(s.switch, flags)),
    )


def _summary(text: _CardText, flags: frozenset[str]) -> str:
    """The first summary whose switch the flags turn on, else the card's own."""
    for summary in text.summaries:
        if _applies(summary, flags):
            return summary["text"]
    return text.summary


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
    plan: _Plan,
    finding: Finding,
    evidence: list[Evidence] | tuple[Evidence, ...],
    words: _Words,
    values: dict,
    from_note: bool = False,
) -> str:
    """The card's markdown: its paragraphs (a blank line between each), the evidence and what
    could not be read as lists under their headings, then the sources."""
    if plan.head is not None:
        blocks = [plan.head]
    else:  # format_map only the paragraphs that quote: it copies even a text without a field
        blocks = [block.format_map(values) if quotes else block for block, quotes in plan.blocks]
    if from_note:
        blocks.append(_from_note_paragraph())
    found = words.evidence_lines(evidence)
    if found:
        blocks.append(words.evidence_head + "\n- ".join(found))
    cannot_read = words.cannot_read(finding)
    if cannot_read:
        blocks.append(words.unreadable_head + "\n- ".join(cannot_read))
    blocks.append(plan.text.sources_line)
    return "\n\n".join(blocks)


@cache
def _list_heads() -> tuple[str, str]:
    """What starts the list of evidence and the list of what could not be read: the heading,
    a blank line, the first item's dash."""
    headings = content().common["headings"]
    return f"**{headings['evidence']}**\n\n- ", f"**{headings['unreadable']}**\n\n- "


@cache
def _from_note_paragraph() -> str:
    return " ".join(content().common["from_note"]["paragraph"].split())


def uuid5(namespace: uuid.UUID | str, name: str) -> str:
    """str(uuid.uuid5(namespace, name)), without making UUID objects (a card and each of its
    suggestions take one)."""
    space = (
        namespace.bytes
        if isinstance(namespace, uuid.UUID)
        else bytes.fromhex(namespace.replace("-", ""))
    )
    return _uuid_text(hashlib.sha1(space + name.encode("utf-8")))  # noqa: S324


# Every card's uuid hashes the same namespace first: hashed once, copied per card.
_CARD_SPACE = hashlib.sha1(CARD_NAMESPACE.bytes)  # noqa: S324


def _card_uuid(name: str) -> str:
    """uuid5(CARD_NAMESPACE, name)."""
    sha1 = _CARD_SPACE.copy()
    sha1.update(name.encode("utf-8"))
    return _uuid_text(sha1)


def _uuid_text(sha1) -> str:
    """The name-based (version 5) UUID of this SHA-1 as text (RFC 4122, 4.3): the first 16
    bytes, with the version (5) as the 13th hex digit and the variant (binary 10) in the top
    bits of the 17th; worked on the hex digits, which is three times faster than on bytes."""
    h = sha1.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# A hex digit with its top two bits set to binary 10 (the RFC 4122 variant).
_VARIANT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}


def _suggestion(template: _Suggestion, card_uuid: str, index: int, words: _Words, finding):
    actions = []
    for action in template.actions:
        if action.resource is None:  # for_each_order
            actions += [
                {
                    "type": "delete",
                    "description": action.description.format(order=reference),
                    "resourceId": reference,
                }
                for reference in finding.orders
            ]
        else:
            actions.append(
                {
                    "type": action.type,
                    "description": action.description,
                    "resource": _with_patient(
                        action.resource, action.patient_paths, words.chart.patient_reference
                    ),
                }
            )
    suggestion = {
        "label": template.label,
        "uuid": uuid5(card_uuid, f"suggestion-{index}"),
        "actions": actions,
    }
    if template.recommended is not None:
        suggestion["isRecommended"] = template.recommended
    return suggestion


def _noted(evidence: list[Evidence] | tuple[Evidence, ...], chart: Chart) -> list[NoteFact]:
    """The draft-note findings a list of evidence quotes, in order, each once."""
    if not chart.note_facts:  # no draft note (every hook but note signing)
        return []
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
