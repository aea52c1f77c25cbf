"""Tolerant reading: the one place where deviations of common clients are read as meant.

A FHIR array field sent as a single object (the CDS Hooks sandbox sends a draft
MedicationRequest's `reasonCode` as one CodeableConcept) is read as a one-item array, and a
warning names the field path, never its value. The pass runs over the request's resources
(prefetch, `context.draftOrders`, `context.note`) before schema validation and before the
chart, so nothing downstream needs to know. Only an object where an array of objects belongs
is tolerated; anything else malformed is still answered with 400.

Feedback too: the older bare-Coding `overrideReason` is read as `overrideReason.reason`.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("cds_service.tolerant")
_MAX_PATH = 200  # a path holds field names only; a long one is cut, not echoed

# Fields whose FHIR R4 cardinality is 0..* in every element that has them.
_ANYWHERE = frozenset({"coding", "extension", "modifierExtension"})

# Array fields (FHIR R4 cardinality 0..*) of the resources the service reads, as paths from
# the resource; a dotted path is an array inside the items of another field.
_BY_TYPE: dict[str, tuple[str, ...]] = {
    "Bundle": ("entry", "link"),
    "Patient": ("identifier", "name", "telecom", "address"),
    "Condition": (
        "identifier",
        "category",
        "bodySite",
        "evidence",
        "evidence.code",
        "evidence.detail",
        "stage",
        "note",
    ),
    "Observation": (
        "identifier",
        "category",
        "performer",
        "interpretation",
        "note",
        "referenceRange",
        "component",
        "component.interpretation",
        "component.referenceRange",
    ),
    "MedicationRequest": (
        "identifier",
        "category",
        "reasonCode",
        "reasonReference",
        "basedOn",
        "note",
        "dosageInstruction",
        "dosageInstruction.additionalInstruction",
        "dosageInstruction.doseAndRate",
    ),
    "MedicationStatement": (
        "identifier",
        "reasonCode",
        "reasonReference",
        "note",
        "dosage",
        "dosage.additionalInstruction",
        "dosage.doseAndRate",
    ),
    "ServiceRequest": (
        "identifier",
        "category",
        "orderDetail",
        "reasonCode",
        "reasonReference",
        "bodySite",
        "performer",
        "note",
    ),
    "AllergyIntolerance": ("identifier", "note", "reaction", "reaction.manifestation"),
    "Procedure": ("identifier", "reasonCode", "reasonReference", "bodySite", "note"),
    "DocumentReference": ("identifier", "category", "author", "content"),
    "Encounter": ("identifier", "type", "reasonCode", "reasonReference", "diagnosis"),
}


_PATHS = {kind: tuple(tuple(p.split(".")) for p in paths) for kind, paths in _BY_TYPE.items()}


def tolerate(body: object, prefetch_keys: object = None) -> list[str]:
    """Rewrite, in place, each single object sent for a FHIR array of the request's resources
    as a one-item array; the field paths rewritten (logged as one warning). `prefetch_keys`
    limits the prefetch values read to the service's own keys (None: all)."""
    if not isinstance(body, dict):
        return []
    fixed: list[str] = []
    prefetch = body.get("prefetch")
    if isinstance(prefetch, dict):
        for key, value in prefetch.items():
            if prefetch_keys is None or key in prefetch_keys:
                _resource(value, f"prefetch.{key}", fixed)
    context = body.get("context")
    if isinstance(context, dict):
        for key in ("draftOrders", "note"):
            _resource(context.get(key), f"context.{key}", fixed)
    _warn(fixed, "a single object sent for a FHIR array, read as a one-item array")
    return fixed


def tolerate_feedback(body: dict) -> None:
    """Older CDS Hooks clients (the sandbox among them) send `overrideReason` as the Coding
    itself; CDS Hooks 2.0 wraps it as `overrideReason.reason`. The bare form is read as the
    wrapped one, with a warning naming the field (never its value)."""
    items = body.get("feedback")
    fixed = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        reason = item.get("overrideReason") if isinstance(item, dict) else None
        if (
            isinstance(reason, dict)
            and "code" in reason
            and not {"reason", "userComment"} & reason.keys()
        ):
            item["overrideReason"] = {"reason": reason}
            fixed.append(f"feedback[{index}].overrideReason")
    _warn(fixed, "a bare Coding sent as overrideReason, read as overrideReason.reason")


def _warn(fixed: list[str], what: str) -> None:
    """One warning naming the tolerated fields' paths (at most 20), never their values."""
    if fixed:
        event = {"event": "tolerated", "what": what, "fields": fixed[:20], "count": len(fixed)}
        log.warning(json.dumps(event))


def _resource(resource: object, path: str, fixed: list[str]) -> None:
    if not isinstance(resource, dict):
        return
    resource_type = resource.get("resourceType")
    for parts in _PATHS.get(resource_type, ()) if isinstance(resource_type, str) else ():
        value = resource.get(parts[0])
        if type(value) is dict or (len(parts) > 1 and type(value) is list):
            _wrap(resource, parts, path, fixed)
    if resource_type == "Bundle":
        entries = resource.get("entry")
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict):
                _resource(entry.get("resource"), f"{path}.entry[{index}].resource", fixed)
        return
    if _has_single(resource):
        _anywhere(resource, path, fixed)


def _has_single(node: dict) -> bool:
    """Whether a `coding`, `extension` or `modifierExtension` under `node` is an object: the
    cheap check that spares nearly every resource the path-keeping walk below."""
    try:
        return _single_under(node)
    except RecursionError:  # nested deeper than this stack allows: the walk below will tell
        return True


def _single_under(node: dict) -> bool:
    for name, value in node.items():
        kind = type(value)
        if kind is dict:
            if name in _ANYWHERE or _single_under(value):
                return True
        elif kind is list:
            for item in value:
                if type(item) is dict and _single_under(item):
                    return True
    return False


def _wrap(node: dict, parts: tuple[str, ...], path: str, fixed: list[str]) -> None:
    name, rest = parts[0], parts[1:]
    value = node.get(name)
    here = f"{path}.{name}"
    if isinstance(value, dict):
        node[name] = [value]
        fixed.append(here[:_MAX_PATH])
        value = node[name]
    if rest and isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                _wrap(item, rest, f"{here}[{index}]", fixed)


def _anywhere(resource: dict, path: str, fixed: list[str]) -> None:
    """`coding`, `extension` and `modifierExtension` at any depth (without recursion: a body
    may be nested as deep as the JSON parser allows). Contained resources are read too. A
    node's path is kept as a link to its parent's and spelt out only for a field rewritten."""
    stack: list[tuple[object, tuple]] = [(resource, (None, path))]  # (parent, name or index)
    while stack:
        node, here = stack.pop()
        if type(node) is dict:
            for name, value in node.items():
                kind = type(value)
                if kind is dict:
                    if name in _ANYWHERE:
                        node[name] = value = [value]
                        fixed.append(_spell((here, name)))
                    stack.append((value, (here, name)))
                elif kind is list:
                    stack.append((value, (here, name)))
        else:
            for index, item in enumerate(node):
                if type(item) is dict or type(item) is list:
                    stack.append((item, (here, index)))


def _spell(link: tuple) -> str:
    parts = []
    while link is not None:
        link, part = link
        parts.append(f"[{part}]" if type(part) is int else f".{part}" if link else part)
    return "".join(reversed(parts))[:_MAX_PATH]
