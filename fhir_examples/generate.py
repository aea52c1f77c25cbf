"""Writes fhir_examples/scenarios/*.json: synthetic patients as complete hook requests.

Every scenario is dated relative to EXAMPLE_NOW (the tests and demos pin "now" to it with
CDS_FIXED_NOW) and lists the rule ids it must fire. Run: python fhir_examples/generate.py
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

EXAMPLE_NOW = datetime(2026, 11, 20, 12, 0, 0)
OUT = Path(__file__).resolve().parent / "scenarios"
SN, ICD, LN = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SERVICE = {
    "patient-view": "cramp-sciatica-patient-view",
    "order-select": "cramp-sciatica-order-select",
    "order-sign": "cramp-sciatica-order-sign",
    "dev.crampcds.note-sign": "cramp-sciatica-note-sign",
}


def day(days_ago: int) -> str:
    return (EXAMPLE_NOW - timedelta(days=days_ago)).date().isoformat()


def patient(pid: str, birth: str = "1971-03-14", gender: str = "female") -> dict:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Example", "given": [pid.title()]}],
        "gender": gender,
        "birthDate": birth,
    }


def condition(pid, cid, codings, days_ago, clinical="active", verification="confirmed", text=None):
    resource = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"system": CLIN, "code": clinical}]},
        "verificationStatus": {"coding": [{"system": VER, "code": verification}]},
        "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": day(days_ago),
    }
    if text:
        resource["code"]["text"] = text
    return resource


def lab(pid, oid, loinc, display, value, unit, days_ago):
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": CAT, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LN, "code": loinc, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day(days_ago) + "T08:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def bundle(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['id'])}", "resource": r}
            for r in resources
        ],
    }


def request(hook, pid, instance, context_extra=None, conditions=(), observations=(), meds=()):
    context = {"userId": "Practitioner/example-clinician", "patientId": pid}
    context.update(context_extra or {})
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, instance)),
        "context": context,
        "prefetch": {
            "patient": patient(pid),
            "conditions": bundle(list(conditions)),
            "observations": bundle(list(observations)),
            "medications": bundle(list(meds)),
        },
    }


def normal_labs(pid: str, days_ago: int = 10) -> list[dict]:
    return [
        lab(pid, f"{pid}-k", "2823-3", "Potassium", 4.2, "mmol/L", days_ago),
        lab(pid, f"{pid}-na", "2951-2", "Sodium", 140, "mmol/L", days_ago),
        lab(pid, f"{pid}-ca", "17861-6", "Calcium", 9.4, "mg/dL", days_ago),
        lab(pid, f"{pid}-mg", "19123-9", "Magnesium", 2.0, "mg/dL", days_ago),
    ]


def cramp(pid, days_ago=5, system=ICD, code="R25.2", display="Cramp and spasm"):
    return condition(pid, f"{pid}-cramp", [(system, code, display)], days_ago)


def mri_order(pid: str, oid: str) -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [{"system": LN, "code": "30679-5", "display": "MR Lumbar spine WO contrast"}]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "reasonCode": [{"coding": [{"system": SN, "code": "55300003", "display": "Cramp"}]}],
    }


def note(text: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary",
        "type": {"coding": [{"system": LN, "code": "11506-3", "display": "Progress note"}]},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ],
    }


def scenarios() -> dict[str, tuple[str, dict, list[str]]]:
    s: dict[str, tuple[str, dict, list[str]]] = {}
    pid = "cramps-only"
    s[pid] = (
        "Cramps (ICD-10-CM R25.2) and nothing else: no labs, no sciatica.",
        request("patient-view", pid, pid, conditions=[cramp(pid)]),
        ["cramp-labs-missing"],
    )
    pid = "cramps-normal-labs"
    s[pid] = (
        "Cramps (SNOMED only) with normal potassium, sodium, calcium and magnesium 10 days ago.",
        request(
            "patient-view",
            pid,
            pid,
            conditions=[cramp(pid, system=SN, code="55300003", display="Cramp")],
            observations=normal_labs(pid),
        ),
        [],
    )
    pid = "sciatica-no-cramps"
    s[pid] = (
        "Sciatica (M54.31, dotted) without any cramp report: the service stays silent.",
        request(
            "patient-view",
            pid,
            pid,
            conditions=[
                condition(pid, f"{pid}-sci", [(ICD, "M54.31", "Sciatica, right side")], 20)
            ],
        ),
        [],
    )
    pid = "cramps-old"
    s[pid] = (
        "A cramp condition with onset 91 days ago no longer counts as reported cramps.",
        request("patient-view", pid, pid, conditions=[cramp(pid, days_ago=91)]),
        [],
    )
    pid = "order-sign-cramp-reason"
    s[pid] = (
        "Order-sign: a draft lumbar MRI whose reason is cramp; no conditions, no labs.",
        request(
            "order-sign",
            pid,
            pid,
            {
                "draftOrders": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": mri_order(pid, "mri-1")}],
                }
            },
        ),
        ["cramp-labs-missing"],
    )
    pid = "order-select-cramps"
    s[pid] = (
        "Order-select: cramps (undotted M62831, calf spasm) and a selected MRI order; no labs.",
        request(
            "order-select",
            pid,
            pid,
            {
                "selections": ["ServiceRequest/mri-2"],
                "draftOrders": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": mri_order(pid, "mri-2")}],
                },
            },
            conditions=[cramp(pid, code="M62831", display="Muscle spasm of calf muscle")],
        ),
        ["cramp-labs-missing"],
    )
    pid = "note-sign-cramps"
    s[pid] = (
        "Note signing: coded cramps; the draft note is plain text. No labs.",
        request(
            "dev.crampcds.note-sign",
            pid,
            pid,
            {"note": note("Pt c/o cramping in the right calf at night for 2 weeks.")},
            conditions=[cramp(pid)],
        ),
        ["cramp-labs-missing"],
    )
    return s


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (description, body, rule_ids) in scenarios().items():
        (OUT / f"{name}.request.json").write_text(json.dumps(body, indent=2) + "\n")
        expected = {
            "description": description,
            "service": SERVICE[body["hook"]],
            "now": EXAMPLE_NOW.isoformat() + "Z",
            "rule_ids": rule_ids,
        }
        (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(scenarios())} scenarios to {OUT}")


if __name__ == "__main__":
    main()
