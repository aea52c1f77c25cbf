"""The rules page: every rule as the service runs it, read from what the service runs on.

Nothing here is a second copy. The rules are REGISTRY; what each card says (title, source,
links, suggestions, override reasons) is the card content the service renders (`cards.content()`)
and the header comment of the same card file (its trigger summary); the concept groups are the
ValueSet files the terminology loads; which concept groups, indicators and other rules a rule
uses is read from the rule's own code (its syntax tree, following the helpers it calls).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import types
from dataclasses import dataclass, field
from functools import cache

from .. import cards, terminology
from ..content import content_dir
from ..labs import Lab
from ..rules import REGISTRY, RULE_IDS
from ..rules.base import INDICATOR_ORDER
from ..rules.trigger import cramp_evidence

_RULE_PACKAGE = "cds_service.rules"
SYSTEM_NAMES = {
    terminology.SNOMED: "SNOMED CT",
    terminology.ICD10CM: "ICD-10-CM",
    terminology.LOINC: "LOINC",
    terminology.RXNORM: "RxNorm",
    terminology.CPT: "CPT",
}


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str
    note: str = ""  # how the entry matches, when not exactly

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system, self.system)


@dataclass(frozen=True)
class ValueSetView:
    name: str
    title: str
    url: str
    description: str
    codes: tuple[Code, ...]
    names: tuple[str, ...]  # matched in a concept's text when no code matches


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class RuleView:
    rule_id: str
    title: str
    indicators: tuple[str, ...]
    indicator_note: str  # e.g. "warning; critical if bilateral foot drop"
    trigger: str
    logic: str  # the rule function's docstring
    function: str
    value_sets: tuple[ValueSetView, ...]
    depends_on: tuple[str, ...]
    source: Link
    links: tuple[Link, ...]
    guideline: str
    suggestions: tuple[str, ...]
    override_reasons: tuple[str, ...]
    quiet_days: tuple[tuple[str, int], ...] = ()  # (indicator, days) feedback quiets it


@dataclass(frozen=True)
class Catalog:
    trigger: str
    trigger_value_sets: tuple[ValueSetView, ...]
    rules: tuple[RuleView, ...]
    override_reason_system: str
    missing: tuple[str, ...] = field(default=())  # concept groups the code names but none loads


@cache
def catalog() -> Catalog:
    value_sets = value_set_views()
    content = cards.content()
    headers = card_headers()
    missing: set[str] = set()

    def views(names: tuple[str, ...]) -> tuple[ValueSetView, ...]:
        missing.update(n for n in names if n not in value_sets)
        return tuple(value_sets[n] for n in names if n in value_sets)

    names = frozenset(terminology.load().value_sets)
    trigger_uses = code_uses((cramp_evidence,), names)
    rules = []
    for rule in REGISTRY:
        uses = code_uses((rule.evaluate,), names, rule.rule_id)
        text = content.cards[rule.rule_id]
        reasons = content.common["override_reasons"] + (text.get("extra_override_reasons") or [])
        rules.append(
            RuleView(
                rule_id=rule.rule_id,
                title=text["source"]["topic_display"],
                indicators=uses.indicators,
                indicator_note=headers.get(rule.rule_id, ("", ""))[0],
                trigger=headers.get(rule.rule_id, ("", ""))[1] or _doc(rule.evaluate),
                logic=_doc(rule.evaluate),
                function=f"{rule.evaluate.__module__}.{rule.evaluate.__qualname__}",
                value_sets=views(uses.value_sets),
                depends_on=uses.rules,
                source=Link(text["source"]["label"], text["source"]["url"]),
                links=tuple(Link(k["label"], k["url"]) for k in text.get("links") or []),
                guideline=text["guideline"],
                suggestions=tuple(s["label"] for s in text.get("suggestions") or []),
                override_reasons=tuple(r["display"] for r in reasons),
                quiet_days=tuple((text.get("quiet_days") or {}).items()),
            )
        )
    return Catalog(
        trigger=_doc(cramp_evidence),
        trigger_value_sets=views(trigger_uses.value_sets),
        rules=tuple(rules),
        override_reason_system=content.common["override_reason_system"],
        missing=tuple(sorted(missing)),
    )


def reason_displays() -> dict[tuple[str, str], str]:
    """(system, code) -> display of every override reason a card may offer."""
    content = cards.content()
    system = content.common["override_reason_system"]
    reasons = list(content.common["override_reasons"])
    for text in content.cards.values():
        reasons += text.get("extra_override_reasons") or []
    return {(system, r["code"]): r["display"] for r in reasons}


# ------------------------------------------------------------------------------ value sets


def value_set_views() -> dict[str, ValueSetView]:
    """Every ValueSet file of valuesets/, by name, with its codes and their displays."""
    views = {}
    for path in sorted(content_dir("valuesets").glob("*.json")):
        document = json.loads(path.read_text("utf-8"))
        codes = []
        for entry in document.get("expansion", {}).get("contains", []):
            extensions = {e["url"]: e for e in entry.get("extension", [])}
            note = ""
            if terminology.PREFIX_EXT in extensions:
                note = "this code and every code below it"
            elif terminology.UNVERIFIED_EXT in extensions:
                word = extensions[terminology.UNVERIFIED_EXT]["valueString"]
                note = f"only when the display or text also says '{word}'"
            codes.append(Code(entry["system"], entry["code"], entry.get("display", ""), note))
        names = tuple(
            e["valueString"]
            for e in document.get("extension", [])
            if e["url"] == terminology.NAME_EXT
        )
        views[document["name"]] = ValueSetView(
            name=document["name"],
            title=document.get("title", document["name"]),
            url=document["url"],
            description=document.get("description", ""),
            codes=tuple(codes),
            names=names,
        )
    return views


# ------------------------------------------------------------------------------ card files


def card_headers() -> dict[str, tuple[str, str]]:
    """rule id -> (indicator note, trigger summary) from the leading comment of its card file,
    written `rule-id (indicator note)[, hooks]: trigger`."""
    headers = {}
    for path in sorted(content_dir("cards").glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        lines = []
        for line in path.read_text("utf-8").splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        text = " ".join(lines)
        rule_id = path.stem
        note = ""
        if text.startswith(rule_id) and ": " in text:
            head, _, text = text.partition(": ")
            head = head.removeprefix(rule_id).strip()
            if head.startswith("(") and ")" in head:
                note, _, head = head[1:].partition(")")
            head = head.strip(" ,")
            if head:  # the hooks it is limited to
                text = f"{head}: {text}"
        if text:
            headers[rule_id] = (note, text)
    return headers


# ------------------------------------------------------------------------------ code reading


@dataclass(frozen=True)
class CodeUses:
    value_sets: tuple[str, ...]
    indicators: tuple[str, ...]
    rules: tuple[str, ...]  # other rules whose findings it reads


def code_uses(
    functions: tuple[types.FunctionType, ...], value_set_names: frozenset[str], own: str = ""
) -> CodeUses:
    """What the functions (and the rule helpers they call) name: concept groups (as strings,
    module constants or labs), the indicators of the Findings they make, other rule ids."""
    sets: dict[str, None] = {}
    indicators: set[str] = set()
    rules: dict[str, None] = {}
    seen: set[types.CodeType] = set()

    def value(obj: object) -> None:
        if isinstance(obj, Lab):
            sets[obj.value_set] = None
        elif isinstance(obj, str):
            if obj in value_set_names:
                sets[obj] = None
            elif obj in RULE_IDS and obj != own:
                rules[obj] = None
        elif isinstance(obj, tuple | list | frozenset | set):
            for item in obj:
                if isinstance(item, Lab | str):
                    value(item)

    def visit(function: types.FunctionType) -> None:
        if function.__code__ in seen:
            return
        seen.add(function.__code__)
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant):
                value(node.value)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                found = function.__globals__.get(node.id)
                if isinstance(found, types.FunctionType):
                    if found.__module__.startswith(_RULE_PACKAGE):
                        visit(found)
                else:
                    value(found)
            elif isinstance(node, ast.Call) and _called(node) == "Finding":
                indicator = node.args[0] if node.args else _keyword(node, "indicator")
                if indicator is not None:
                    indicators.update(
                        n.value
                        for n in ast.walk(indicator)
                        if isinstance(n, ast.Constant) and n.value in INDICATOR_ORDER
                    )

    for function in functions:
        visit(function)
    return CodeUses(
        tuple(sets),
        tuple(sorted(indicators, key=INDICATOR_ORDER.__getitem__)),
        tuple(r for r in RULE_IDS if r in rules),
    )


def _called(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _doc(function: object) -> str:
    return " ".join((inspect.getdoc(function) or "").split())
