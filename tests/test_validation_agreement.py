"""The compiled validator (jsonschema-rs) and `jsonschema` agree on what is valid (issue 15).

The service asks the compiled validator first and `jsonschema` only when it says invalid (for
the OperationOutcome's wording), so the two must agree: over every example request under
fhir_examples/, the fuzz corpus and findings under tests/fuzz/, and a set of bad inputs made
from the examples (each field in turn missing, of another type, empty, with a trailing newline,
a separator character, a non-ASCII digit, an integer beyond 64 bits, a lone surrogate). Where
the compiled validator is stricter by design (Python's `$` also matches before a final
newline; a non-ASCII digit), `jsonschema` decides: the verdict of `problems` is its verdict.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from cds_service import validation
from cds_service.services import SERVICES

ROOT = Path(__file__).resolve().parent.parent
FUZZ = Path(__file__).parent / "fuzz"
CONTEXTS = {service.hook: service.context_schema for service in SERVICES}


def _load(path: Path) -> object | None:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _examples() -> list[tuple[str, object]]:
    paths = sorted(ROOT.glob("fhir_examples/**/*.request.json*"))
    paths += sorted(p for p in (FUZZ / "corpus" / "request").glob("*") if p.is_file())
    paths += sorted(p for p in (FUZZ / "findings" / "request").glob("*") if p.is_file())
    loaded = [(str(p.relative_to(ROOT)), _load(p)) for p in paths]
    return [(name, body) for name, body in loaded if body is not None]


EXAMPLES = _examples()
BIG = 10**30  # more than 64 bits: the compiled validator cannot read it
REPLACEMENTS = (None, 1, 2.5, True, "", "x", [], {}, [{}], BIG, "\ud800")


def _paths(node: object, prefix: tuple = (), depth: int = 0):
    """Paths to the fields the schemas look at (the prefetch's FHIR resources are skipped
    past their first level: the schemas leave them to the chart's checks)."""
    if depth > 4:
        return
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node[:2])
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*prefix, key)
        if prefix[:1] != ("prefetch",) or depth < 2:
            yield from _paths(value, (*prefix, key), depth + 1)


def _set(body: object, path: tuple, value: object) -> object:
    copied = copy.deepcopy(body)
    node = copied
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copied


_DELETE = object()


def _mutations(body: object):
    for path in _paths(body):
        yield path, None, _set(body, path, _DELETE)
        for value in REPLACEMENTS:
            yield path, value, _set(body, path, value)
        original = _get(body, path)
        if isinstance(original, str):
            for text in (original + "\n", original + "\x1c", "\u0663" + original, " " * 3):
                yield path, text, _set(body, path, text)


def _get(body: object, path: tuple) -> object:
    for key in path:
        body = body[key]
    return body


def _python_valid(name: str, document: object) -> bool:
    return not any(True for _ in validation.validator(name).iter_errors(document))


def _check(name: str, document: object, where: str, stricter: list) -> None:
    fast, python = validation.is_valid(name, document), _python_valid(name, document)
    assert not (fast and not python), f"{where}: compiled says valid, jsonschema invalid"
    if python and not fast:
        stricter.append(where)
    assert (validation.problems(name, document) == []) == python, where


def _documents(body: object):
    yield "request", body
    if isinstance(body, dict) and isinstance(body.get("context"), dict):
        context = CONTEXTS.get(body["hook"]) if isinstance(body.get("hook"), str) else None
        if context:
            yield context, body["context"]


def test_examples_agree_exactly():
    """Every example and fuzz case: the same verdict from both validators."""
    assert len(EXAMPLES) > 150
    for where, body in EXAMPLES:
        for name, document in _documents(body):
            stricter: list = []
            _check(name, document, f"{where} ({name})", stricter)
            assert not stricter, f"{where} ({name}): valid, but the compiled validator refuses"


def test_examples_pass_both():
    """The examples are valid requests (else the agreement above would say little)."""
    valid = [
        w
        for w, body in EXAMPLES
        if w.startswith("fhir_examples") and _python_valid("request", body)
    ]
    assert len(valid) > 130


@pytest.mark.parametrize(
    "example",
    [
        "scenarios/mixed-three-causes",
        "scenarios/order-sign-cramp-reason",
        "note-sign-cauda-equina-from-note",
    ],
)
def test_bad_inputs_agree(example):
    """Each field of an example changed in turn: never valid for the compiled validator alone,
    and stricter only for the values the module names (Python's `$` before a final newline, a
    non-ASCII digit, a value the compiled validator cannot read)."""
    body = next((b for w, b in EXAMPLES if example in w), None)
    assert body is not None, f"no example named {example}"
    count = 0
    for path, value, mutated in _mutations(body):
        for name, document in _documents(mutated):
            stricter: list = []
            _check(name, document, f"{example} {path} ({name})", stricter)
            count += 1
            assert not stricter or _stricter_by_design(value), (
                f"{stricter[0]}: stricter than jsonschema for {value!r}"
            )
    assert count > 300


def _stricter_by_design(value: object) -> bool:
    if value is BIG:
        return True
    return isinstance(value, str) and (
        value.endswith("\n")
        or "\ud800" in value
        or any(c.isdigit() and not c.isascii() for c in value)
    )


def test_patterns_rewritten_for_python_semantics():
    r"""`\s` holds U+001C-U+001F as Python's does; `\d` is ASCII (stricter); the rest as is."""
    assert validation._python_pattern(r"^[^\s]+$") == r"^[^\s\x1c-\x1f]+$"
    assert validation._python_pattern(r"^a\s*b$") == r"^a[\s\x1c-\x1f]*b$"
    assert validation._python_pattern(r"^\d{4}[\d.]$") == r"^[0-9]{4}[0-9.]$"
    assert validation._python_pattern(r"^[A-Za-z0-9\-.]{1,64}$") == r"^[A-Za-z0-9\-.]{1,64}$"


def test_separator_and_newline_verdicts_are_pythons():
    """A fhirServer with U+001C inside, a hookInstance with a final newline, a 31-digit
    integer: the verdict is `jsonschema`'s whatever the compiled validator says."""
    body = next(b for w, b in EXAMPLES if "mixed-three-causes" in w)
    for path, value in (
        (("fhirServer",), "https://fhir.example/r4\x1cx"),
        (("hookInstance",), body["hookInstance"] + "\n"),
        (("context", "patientId"), body["context"]["patientId"] + "\n"),
        (("prefetch", "patient", "id"), BIG),
    ):
        document = _set(body, path, value)
        assert (validation.problems("request", document) == []) == _python_valid(
            "request", document
        ), path
