"""Every regular expression the service runs on input runs in linear time.

The patterns are enumerated, not listed: every `pattern` of the JSON Schemas, every compiled
regex reachable from the package's modules (module globals and class attributes), and every
literal pattern the package's source hands to `re` or names as a schema `pattern`. Each one is
run (as `finditer` runs it, to the end of the input) against long inputs built from its own
parts: a run of each of its characters (and of each pair) before a character that breaks the
match, its own shortest match cut short and repeated, and the issue's cases. A pattern that
backtracks with the square of the input takes seconds on these; a linear one, milliseconds.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import signal
import time
from pathlib import Path
from re import _constants as C  # noqa: N812
from re import _parser

import pytest

import cds_service

PACKAGE = Path(cds_service.__file__).parent
SIZE = 50_000  # characters of each adversarial input
PAIR_CHARS = 14  # pairs of the pattern's first characters (of at most 24) make runs too
BOUND = 1.0  # seconds: a linear pattern takes a few milliseconds on SIZE characters

# The issue's inputs, run against every pattern.
ISSUE_CASES = {
    "80,000 spaces then !": " " * 80_000 + "!",
    "a/ * 49,999": "a/" * 49_999,
    "99,999 dots then a": "." * 99_999 + "a",
    "80 KB of *": "*" * 80_000,
    "**a  * 20,000": "**a " * 20_000,
}

CATEGORY_CHARS = {
    C.CATEGORY_DIGIT: "1",
    C.CATEGORY_NOT_DIGIT: "a",
    C.CATEGORY_SPACE: " \t",
    C.CATEGORY_NOT_SPACE: "a",
    C.CATEGORY_WORD: "a_",
    C.CATEGORY_NOT_WORD: " !",
    C.CATEGORY_LINEBREAK: "\n",
    C.CATEGORY_NOT_LINEBREAK: "a",
}
BREAKERS = ("!", " ", "\n", "\x00")  # what ends a run and fails the match
REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT}


def _schema_patterns() -> dict[str, str]:
    found = {}

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found[f"{where}"] = value
                else:
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    for path in sorted((PACKAGE / "schemas").glob("*.json")):
        walk(json.loads(path.read_text()), f"schemas/{path.name}#")
    return found


def _compiled_patterns() -> dict[str, re.Pattern]:
    found = {}
    for info in pkgutil.walk_packages([str(PACKAGE)], "cds_service."):
        if info.name.startswith("cds_service.stores.migrations"):
            continue  # Alembic's scripts run only inside Alembic (and hold no pattern)
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found[f"{info.name}.{name}"] = value
            elif isinstance(value, type) and value.__module__ == info.name:
                for attribute, inner in vars(value).items():
                    if isinstance(inner, re.Pattern):
                        found[f"{info.name}.{name}.{attribute}"] = inner
    return found


def _literal_patterns() -> dict[str, tuple[str, int]]:
    """Literal patterns in the source: the first argument of re.<function>(...) and the value
    of a "pattern" key (schemas written in Python). (pattern, flags)"""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.func.attr
                in {"compile", "search", "match", "fullmatch", "sub", "subn", "split", "findall"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                flags = 0
                first_flag = 1 if node.func.attr == "compile" else 2
                for extra in [*node.args[first_flag:], *node.keywords]:
                    value = extra.value if isinstance(extra, ast.keyword) else extra
                    flags |= _flags(value)
                found[where] = (node.args[0].value, flags)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "pattern"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found[where] = (value.value, 0)
    return found


def _flags(node: ast.AST) -> int:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return int(getattr(re, node.attr, 0)) if node.value.id == "re" else 0
    if isinstance(node, ast.BinOp):
        return _flags(node.left) | _flags(node.right)
    return 0


def all_patterns() -> dict[str, re.Pattern]:
    """Each distinct pattern once, under the first name found for it."""
    named = [(k, re.compile(v)) for k, v in _schema_patterns().items()]
    named += list(_compiled_patterns().items())
    named += [(k, re.compile(p, f)) for k, (p, f) in _literal_patterns().items()]
    # Built at run time by notes._target_span from the phrase a caller names.
    named.append(
        (
            "notes._target_span('leg cramps')",
            re.compile(r"\s+".join(re.escape(w) for w in ["leg", "cramps"]), re.IGNORECASE),
        )
    )
    patterns: dict[str, re.Pattern] = {}
    seen = set()
    for name, pattern in named:
        if (pattern.pattern, pattern.flags) not in seen:
            seen.add((pattern.pattern, pattern.flags))
            patterns[name] = pattern
    return patterns


# --- inputs built from a pattern's own parts -------------------------------------------------


def _chars(items, out: set[str]) -> None:
    for op, av in items:
        if op is C.LITERAL or op is C.NOT_LITERAL:
            out.add(chr(av))
        elif op is C.RANGE:
            out.update((chr(av[0]), chr(av[1])))
        elif op is C.CATEGORY:
            out.update(CATEGORY_CHARS.get(av, "a"))
        elif op is C.ANY:
            out.update("a\n")
        elif op is C.IN:
            _chars(av, out)
        elif op in REPEATS:
            _chars(av[2], out)
        elif op is C.SUBPATTERN:
            _chars(av[3], out)
        elif op is C.BRANCH:
            for branch in av[1]:
                _chars(branch, out)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            _chars(av[1], out)
        elif op is C.ATOMIC_GROUP:
            _chars(av, out)


def _example(items) -> str:
    """A short string the items match (fewest repeats, first branch, a member of each set)."""
    out = []
    for op, av in items:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.NOT_LITERAL:
            out.append("a" if chr(av) != "a" else "b")
        elif op is C.IN:
            members: set[str] = set()
            _chars(av, members)
            negated = any(o is C.NEGATE for o, _ in av)
            out.append("a" if negated and "a" not in members else sorted(members)[0])
        elif op is C.ANY:
            out.append("a")
        elif op in REPEATS:
            out.append(_example(av[2]) * av[0])
        elif op is C.SUBPATTERN:
            out.append(_example(av[3]))
        elif op is C.BRANCH:
            out.append(_example(av[1][0]))
        elif op is C.ATOMIC_GROUP:
            out.append(_example(av))
    return "".join(out)


def adversarial(pattern: re.Pattern) -> dict[str, str]:
    parsed = _parser.parse(pattern.pattern, pattern.flags)
    chars: set[str] = set()
    _chars(parsed, chars)
    chars = {c for c in chars if c.isprintable() or c in " \t\n"}
    chars = sorted(chars)[:24]
    branches = parsed[0][1][1] if len(parsed) == 1 and parsed[0][0] is C.BRANCH else [parsed]
    examples = {_example(branch) for branch in branches} | {_example(parsed)}
    inputs = dict(ISSUE_CASES)
    for example in examples:
        for cut in {0, *range(1, len(example))}:
            prefix = example[:cut]
            for c in chars:
                for breaker in BREAKERS:
                    inputs[f"{prefix!r} + {c!r}*N + {breaker!r}"] = prefix + c * SIZE + breaker
            for breaker in " \n!":
                unit = prefix + breaker
                inputs[f"({unit!r})*N"] = unit * (SIZE // len(unit))
    for a in chars[:PAIR_CHARS]:
        for b in chars[:PAIR_CHARS]:
            if a != b:
                inputs[f"({a + b!r})*N + !"] = (a + b) * (SIZE // 2) + "!"
    return inputs


PATTERNS = all_patterns()


def test_the_enumeration_finds_the_patterns_of_the_issue():
    sources = {p.pattern for p in PATTERNS.values()}
    assert len(PATTERNS) >= 25
    for name in ("notes.SPLIT_RE", "notes.TOKEN_RE", "markdown._INLINE", "markdown._HEADING"):
        assert any(k.endswith(name) for k in PATTERNS), name
    assert any(k.endswith("attachment/properties/data") for k in PATTERNS)  # the note's base64
    assert any("httpUrl" in k for k in PATTERNS)
    assert all(isinstance(s, str) for s in sources)


@pytest.mark.parametrize("name", sorted(PATTERNS), ids=lambda n: n.replace("/properties/", "."))
def test_pattern_runs_in_linear_time(name):
    pattern = PATTERNS[name]
    for label, text in adversarial(pattern).items():
        took = _time(pattern, text)
        # one slow input is enough to fail: the alarm stops it at BOUND
        assert took <= BOUND, f"{name} = {pattern.pattern!r} is slow on {label} ({len(text)} chars)"


class _TooSlow(Exception):
    pass


def _alarm(signum, frame):
    raise _TooSlow


def _time(pattern: re.Pattern, text: str) -> float:
    """Seconds to run the pattern over the text, or infinity past BOUND (the regex engine
    checks for signals while it backtracks, so the alarm stops it)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, BOUND)
    start = time.perf_counter()
    try:
        for _ in pattern.finditer(text):
            pass
        return time.perf_counter() - start
    except _TooSlow:
        return float("inf")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
