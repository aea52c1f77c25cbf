"""Is a resource a rule is about to use valid FHIR R4B? Checked on the elements rules read.

Only the elements rules read are checked: a record is never ignored (a red flag missed) for a
fault in a field no rule reads. Dates are not among them: the chart reads them itself and
reports an unreadable one. Plain, well-formed elements (the vast majority) pass a quick shape
check; anything else is validated with fhir.resources, whose verdict decides.
"""

from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

# The elements rules read, per resource type.
READ_ELEMENTS = {
    "Condition": ("code", "clinicalStatus", "verificationStatus", "bodySite", "subject"),
    "Observation": (
        "status",
        "code",
        "category",
        "subject",
        "bodySite",
        "valueQuantity",
        "valueBoolean",
        "valueCodeableConcept",
        "interpretation",
        "referenceRange",
    ),
    "MedicationRequest": (
        "status",
        "intent",
        "subject",
        "medicationCodeableConcept",
        "medicationReference",
    ),
}
_REQUIRED_PLACEHOLDERS = {  # elements R4B requires that no rule reads
    "Condition": {"subject": {"reference": "Patient/unknown"}},
    "Observation": {"status": "unknown", "code": {"text": "unknown"}},
    "MedicationRequest": {
        "status": "unknown",
        "intent": "order",
        "subject": {"reference": "Patient/unknown"},
        "medicationCodeableConcept": {"text": "unknown"},
    },
}


def warm_up() -> None:
    """Import and build the fhir.resources models of the resources rules read now (the first
    record with an element that is not plain would otherwise load them mid-request)."""
    for kind in READ_ELEMENTS:
        fhir_problem(f"{kind}/warm-up", {"resourceType": kind, "status": 1})


def fhir_problem(reference: str, resource: dict) -> str | None:
    """Why the elements of a resource that rules read are not valid FHIR R4B, or None."""
    kind = resource.get("resourceType", "")
    elements = READ_ELEMENTS.get(kind)
    if elements is not None and _all_plain(resource, _CHECKS[kind]):
        return None
    try:
        model = get_fhir_model_class(kind)
    except (KeyError, ValueError, AttributeError):
        return f"{reference}: unknown resource type (not interpretable)"
    if elements is not None:
        read = {name: resource[name] for name in elements if name in resource}
        if "medicationReference" in read:
            read.pop("medicationCodeableConcept", None)
        base = dict(_REQUIRED_PLACEHOLDERS.get(kind, {}))
        if "medicationReference" in read:
            base.pop("medicationCodeableConcept", None)
        resource = {"resourceType": kind, **base, **read}
    try:
        model.model_validate(resource)
    except ValidationError as error:
        problems = [e for e in error.errors() if e["type"] != "extra_forbidden"]
        if problems:
            where = ".".join(str(part) for part in problems[0]["loc"]) or "resource"
            return f"{reference}: not valid FHIR R4 at {where} (not interpretable)"
    except (TypeError, ValueError, RecursionError):
        return f"{reference}: not valid FHIR R4 (not interpretable)"
    return None


_CODING_KEYS = frozenset({"system", "code", "display", "version"})
_QUANTITY_KEYS = frozenset({"value", "unit", "system", "code"})
_REFERENCE_KEYS = frozenset({"reference", "display", "type"})
_CONCEPT_KEYS = frozenset({"coding", "text"})
_RANGE_KEYS = frozenset({"low", "high", "text"})

# The checks below run for every record the chart uses (a dozen elements each): plain loops
# with `type(...) is`, and a Coding's checks inside the CodeableConcept's loop, because a
# function call or a generator per element cost as much as the check itself.


_NO_CODINGS: list = []  # what a concept without `coding` is read as (never changed)


def _text(value: object) -> bool:
    return type(value) is str and value != "" and value.strip() == value


def _concept(value: object) -> bool:
    if type(value) is not dict or not value or not value.keys() <= _CONCEPT_KEYS:
        return False
    coding = value.get("coding", _NO_CODINGS)
    if type(coding) is not list:
        return False
    for c in coding:  # each a plain Coding: string values only, none empty or padded
        if type(c) is not dict or not c.keys() <= _CODING_KEYS:
            return False
        for v in c.values():
            if type(v) is not str or not v or v.strip() != v:
                return False
    if "text" in value:
        text = value["text"]
        return type(text) is str and text != "" and text.strip() == text
    return True


def _quantity(value: object) -> bool:
    if type(value) is not dict or not value or not value.keys() <= _QUANTITY_KEYS:
        return False
    for k, v in value.items():  # a number (not a boolean: its type is bool) or null; strings
        if k == "value":
            if v is not None and type(v) is not float and type(v) is not int:
                return False
        elif type(v) is not str or not v or v.strip() != v:
            return False
    return True


def _reference(value: object) -> bool:
    if type(value) is not dict or not value or not value.keys() <= _REFERENCE_KEYS:
        return False
    for v in value.values():  # noqa: SIM110
        if type(v) is not str or not v or v.strip() != v:
            return False
    return True


def _range(value: object) -> bool:
    if type(value) is not dict or not value or not value.keys() <= _RANGE_KEYS:
        return False
    for k in ("low", "high"):
        if k in value and not _quantity(value[k]):
            return False
    return "text" not in value or _text(value["text"])


def _many(check):
    def many(value: object) -> bool:
        if type(value) is not list or not value:
            return False
        for v in value:  # noqa: SIM110
            if not check(v):
                return False
        return True

    return many


_many_concepts = _many(_concept)


def _concept_or_many(value: object) -> bool:
    return _concept(value) or _many_concepts(value)


# The quick shape of each element rules read; what does not fit goes to fhir.resources.
_SHAPES = {
    "code": _concept,
    "clinicalStatus": _concept,
    "verificationStatus": _concept,
    "valueCodeableConcept": _concept,
    "medicationCodeableConcept": _concept,
    "category": _many_concepts,
    "interpretation": _many_concepts,
    "bodySite": _concept_or_many,
    "subject": _reference,
    "medicationReference": _reference,
    "valueQuantity": _quantity,
    "referenceRange": _many(_range),
    "valueBoolean": lambda v: isinstance(v, bool),
    "status": _text,
    "intent": _text,
}


def _never(value: object) -> bool:
    return False


# Per resource type, (element, its quick check) for the elements rules read.
_CHECKS = {
    kind: tuple((name, _SHAPES.get(name, _never)) for name in elements)
    for kind, elements in READ_ELEMENTS.items()
}


def _all_plain(resource: dict, checks: tuple) -> bool:
    for name, check in checks:  # noqa: SIM110 - a loop: faster than all() over a generator
        if name in resource and not check(resource[name]):
            return False
    return True


def _plain(name: str, value: object) -> bool:
    shape = _SHAPES.get(name)
    return shape is not None and shape(value)
