"""Example hook requests for the console, and hook requests made from a patient Bundle.

The examples are the project's `fhir_examples/` (each `<name>.request.json[.gz]` with its
`<name>.expected.json`). They are test data, not part of the installed package: they are found
in the source tree beside the package or under the working directory the service runs in (the
project folder, when started as the README says).
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..services import Service

_PACKAGE = Path(__file__).resolve().parent.parent
GROUPS = (("scenarios", "Scenarios"), ("realistic", "Realistic records"))
REVIEWER = "Practitioner/console-reviewer"
ORDER_TYPES = ("MedicationRequest", "ServiceRequest")


@dataclass(frozen=True)
class Example:
    group: str
    name: str
    path: Path
    description: str
    service: str
    now: str | None
    rule_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"

    def request(self) -> dict:
        raw = self.path.read_bytes()
        if self.path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return json.loads(raw)


def examples_root() -> Path | None:
    for candidate in (_PACKAGE.parent / "fhir_examples", Path.cwd() / "fhir_examples"):
        if (candidate / "scenarios").is_dir():
            return candidate
    return None


@cache
def _listing(root: Path) -> dict[str, Example]:
    found = {}
    for group, _ in GROUPS:
        for expected_path in sorted((root / group).glob("*.expected.json")):
            name = expected_path.name.removesuffix(".expected.json")
            request = next(
                (
                    p
                    for p in (
                        root / group / f"{name}.request.json",
                        root / group / f"{name}.request.json.gz",
                    )
                    if p.is_file()
                ),
                None,
            )
            if request is None:
                continue
            try:
                expected = json.loads(expected_path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            example = Example(
                group,
                name,
                request,
                str(expected.get("description", "")),
                str(expected.get("service", "")),
                expected.get("now"),
                tuple(expected.get("rule_ids") or ()),
            )
            found[example.key] = example
    return found


def examples() -> dict[str, Example]:
    """Every example found, by `group/name`."""
    root = examples_root()
    return dict(_listing(root)) if root else {}


class NotAPatientBundle(ValueError):
    """The Bundle cannot be made into a hook request; the message says why."""


def request_from_bundle(bundle: object, service: Service) -> dict:
    """A hook request for `service` with everything in the patient Bundle as prefetch.

    The Bundle (any type: a Synthea transaction, a searchset, a collection) must hold one
    Patient. Draft MedicationRequests and ServiceRequests become the draft orders of the order
    hooks (every one selected at order-select); the note-signing hook takes the Bundle's
    DocumentReference as its note. References to the Patient by its `fullUrl` (urn:uuid:...)
    are rewritten as `Patient/<id>`, as a FHIR server would answer them.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise NotAPatientBundle("This is not a FHIR Bundle (resourceType must be 'Bundle')")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise NotAPatientBundle("The Bundle's entry must be an array")
    entries = [e for e in raw_entries if isinstance(e, dict)]
    resources = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
    patients = [
        (e.get("fullUrl"), e["resource"])
        for e in entries
        if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1:
        raise NotAPatientBundle(
            f"The Bundle must hold exactly one Patient, it holds {len(patients)}"
        )
    full_url, patient = patients[0]
    patient_id = patient.get("id")
    if not isinstance(patient_id, str) and isinstance(full_url, str):
        patient_id = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    if not isinstance(patient_id, str) or not patient_id:
        raise NotAPatientBundle("The Patient has no id")
    patient = {**patient, "id": patient_id}
    aliases = {a for a in (full_url, f"urn:uuid:{patient_id}") if isinstance(a, str)}
    resources = [_point_at(r, aliases, f"Patient/{patient_id}") for r in resources]

    def of_type(*kinds: str) -> list[dict]:
        return [r for r in resources if r.get("resourceType") in kinds]

    orders = [r for r in of_type(*ORDER_TYPES) if r.get("status") == "draft"]
    medications = [r for r in of_type("MedicationRequest") if r.get("status") != "draft"]
    context: dict = {"userId": REVIEWER, "patientId": patient_id}
    if service.hook in ("order-select", "order-sign"):
        if not orders:
            raise NotAPatientBundle(
                f"The {service.hook} hook needs draft orders: the Bundle has no "
                "MedicationRequest or ServiceRequest with status 'draft'"
            )
        for index, order in enumerate(orders):
            if not isinstance(order.get("id"), str):
                order["id"] = f"draft-{index + 1}"
        context["draftOrders"] = _searchset(orders)
        if service.hook == "order-select":
            context["selections"] = [f"{o['resourceType']}/{o['id']}" for o in orders]
    elif service.context_schema == "context-note-sign":
        notes = of_type("DocumentReference")
        if not notes:
            raise NotAPatientBundle(
                "The note-signing hook needs the draft note: the Bundle has no DocumentReference"
            )
        context["note"] = notes[-1]
    return {
        "hook": service.hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": {
            "patient": patient,
            "conditions": _searchset(of_type("Condition")),
            "observations": _searchset(of_type("Observation")),
            "medications": _searchset(medications + of_type("Medication")),
        },
    }


def _searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def _point_at(resource: dict, aliases: set[str], reference: str) -> dict:
    """The resource with its `subject`/`patient` naming the Patient by `reference`."""
    changed = dict(resource)
    for key in ("subject", "patient"):
        value = changed.get(key)
        if isinstance(value, dict) and value.get("reference") in aliases:
            changed[key] = {**value, "reference": reference}
    return changed
