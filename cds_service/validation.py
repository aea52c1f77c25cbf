"""JSON Schema validation of every CDS Hooks message, with errors that name the field.

Two validators are built from the same schemas: a compiled one (jsonschema-rs, Rust) that only
says valid or not, and `jsonschema`'s, whose errors become the OperationOutcome's wording. A
document the compiled validator finds valid is valid; any other is read by `jsonschema`, whose
verdict decides (so the compiled validator may be stricter, never more lenient: its patterns are
rewritten to match no more than Python's `re` does). tests/test_validation_agreement.py runs
both over the examples, the tests' bad inputs and the fuzz corpus and finds them agreeing.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from urllib.parse import urljoin

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from .errors import Issue

SCHEMA_BASE = "https://crampcds.dev/schemas/"
_SCHEMA_FILES = (
    "common",
    "request",
    "response",
    "discovery",
    "feedback",
    "context-patient-view",
    "context-order-select",
    "context-order-sign",
    "context-note-sign",
)
MAX_ISSUES = 10


@cache
def _registry() -> Registry:
    package = resources.files("cds_service.schemas")
    schemas = [json.loads((package / f"{name}.json").read_text("utf-8")) for name in _SCHEMA_FILES]
    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas
    )


@cache
def validator(name: str) -> Draft202012Validator:
    """The compiled validator of one schema, e.g. `request` or `context-order-sign`."""
    schema = _registry().contents(f"{SCHEMA_BASE}{name}.json")
    Draft202012Validator.check_schema(schema)
    # References are resolved once here, not on every validation (the schemas are not
    # recursive), which makes validating a request several times faster.
    return Draft202012Validator(_inline(schema, f"{SCHEMA_BASE}{name}.json"))


def _inline(node: object, base: str) -> object:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            target, _, pointer = node["$ref"].partition("#")
            document_url = urljoin(base, target) if target else base
            resolved = _registry().resolver(document_url).lookup(f"#{pointer}").contents
            rest = {k: v for k, v in node.items() if k != "$ref"}
            inlined = _inline(resolved, document_url)
            return {"allOf": [inlined, _inline(rest, base)]} if rest else inlined
        return {k: _inline(v, base) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(item, base) for item in node]
    return node


@cache
def compiled(name: str) -> jsonschema_rs.Draft202012Validator:
    """The Rust validator of one schema: the same inlined schema, its patterns made Python's."""
    return jsonschema_rs.Draft202012Validator(_python_patterns(validator(name).schema))


def _python_patterns(node: object) -> object:
    if isinstance(node, dict):
        return {
            k: _python_pattern(v) if k == "pattern" and isinstance(v, str) else _python_patterns(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_python_patterns(item) for item in node]
    return node


def _python_pattern(pattern: str) -> str:
    r"""A pattern for the Rust engine that matches no string Python's `re` would not. Python's
    `\s` also holds the separators U+001C-U+001F, which Unicode's White_Space (Rust's `\s`)
    does not; `\d` is ASCII here (Python's is any Unicode digit, of the Unicode version it
    ships: stricter, so such a value goes to `jsonschema`, which decides). `$` is Rust's (end
    of text; Python's also matches before a final newline: stricter again)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i : i + 2]
            if escape == r"\s":
                out.append(r"\s\x1c-\x1f" if in_class else r"[\s\x1c-\x1f]")
            elif escape == r"\d":
                out.append("0-9" if in_class else "[0-9]")
            else:
                out.append(escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def is_valid(name: str, document: object) -> bool:
    """The compiled validator's verdict alone (False also when it cannot read the document:
    an integer beyond 64 bits, a lone surrogate, nesting deeper than it goes)."""
    try:
        return compiled(name).is_valid(document)
    except Exception:  # noqa: BLE001 - any refusal to read: `jsonschema` decides
        return False
    except BaseException as exc:  # a Rust panic arrives as pyo3's PanicException
        if type(exc).__name__ != "PanicException":
            raise
        return False


def warm_up() -> None:
    """Build both validators of every schema now, and walk `jsonschema`'s error path once
    (the first request would otherwise do it)."""
    for name in _SCHEMA_FILES:
        compiled(name)
        problems(name, {})


def schema(name: str) -> dict:
    return _registry().contents(f"{SCHEMA_BASE}{name}.json")


def problems(name: str, document: object, prefix: str = "") -> list[Issue]:
    """Issues found validating `document` against schema `name`, each naming its field path."""
    if is_valid(name, document):
        return []
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [_issue(error, prefix) for error in errors[:MAX_ISSUES]]


def _issue(error: ValidationError, prefix: str) -> Issue:
    error = _deepest(error)
    path = _dotted(prefix, error.absolute_path)
    if error.validator == "required":
        missing = _missing_field(error)
        path = _dotted(path, [missing]) if missing else path
        return Issue(f"{path or 'body'}: required field is missing", path or None, "required")
    if error.validator == "dependentRequired":
        missing = _quoted(error.message)
        field = _dotted(path, [missing]) if missing else path
        return Issue(f"{field or 'body'}: {error.message}", field or None, "required")
    forbidden = None
    if error.validator == "not" and isinstance(error.validator_value, dict):
        forbidden = error.validator_value.get("required")
    if isinstance(forbidden, list) and len(forbidden) == 1:  # `not: {required: [x]}`
        field = _dotted(path, [forbidden[0]])
        return Issue(f"{field}: field is not allowed here", field, "invalid")
    return Issue(f"{path or 'body'}: {_describe(error)}", path or None, "invalid")


def _deepest(error: ValidationError) -> ValidationError:
    """For anyOf/if-then failures, the most specific sub-error says more than the summary.

    A sub-error only at the same depth is one alternative among several: picking it would
    say "must be null" of a field that may also be an object, so the summary is kept.
    """
    while error.context:
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) <= len(error.absolute_path):
            break
        error = deepest
    return error


def _missing_field(error: ValidationError) -> str | None:
    # jsonschema reports each missing field as its own error: "'x' is a required property".
    return _quoted(error.message)


def _quoted(message: str) -> str | None:
    match = re.match(r"^'([^']+)'", message)
    return match.group(1) if match else None


def _describe(error: ValidationError) -> str:
    # The message of a pattern or type error quotes the offending value; keep it short, since
    # request values may hold patient data that must not be echoed in full.
    if error.validator in {"pattern", "format"}:
        return f"value is not in the expected form ({error.validator}: {error.validator_value})"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    if error.validator in {"const", "enum"}:
        return f"must be one of {error.validator_value!r}"
    if error.validator == "not":
        return "has a field that is not allowed here"
    if error.validator in {"anyOf", "oneOf"} and error.context:
        alternatives = dict.fromkeys(_describe(e) for e in error.context)
        return " or ".join(alternatives)
    limit = error.validator_value
    bounded = {
        "maxProperties": f"has more than {limit} fields",
        "minProperties": f"needs at least {limit} field(s)",
        "maxItems": f"has more than {limit} items",
        "minItems": f"needs at least {limit} item(s)",
        "maxLength": f"is longer than {limit} characters",
        "minLength": f"needs at least {limit} character(s)",
        "maximum": f"must be at most {limit}",
        "minimum": f"must be at least {limit}",
        "uniqueItems": "has duplicate items",
    }
    if error.validator in bounded:
        return bounded[error.validator]
    if error.validator in {"required", "additionalProperties", "dependentRequired"}:
        return error.message[:200]  # these quote field names, never field values
    # Any other message may quote the instance, which can be patient data: name the rule only.
    return f"does not satisfy the schema's {error.validator!s} rule"


def _dotted(prefix: str, path) -> str:
    parts = [prefix] if prefix else []
    for part in path:
        if isinstance(part, int):
            parts[-1 if parts else 0 :] = [f"{parts[-1] if parts else ''}[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts)
