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
CONDITION_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLIN = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
V2_0136 = "http://terminology.hl7.org/CodeSystem/v2-0136"
# Local code systems in the shape Epic sends them: a lab component and a diagnosis record whose
# codes mean nothing outside that EHR, so the service can read them only by name.
LOCAL_LAB = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
LOCAL_DX = "urn:oid:1.2.840.114350.1.13.0.1.7.2.728286"
LOCAL_ALLERGEN = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707209"
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


def condition(
    pid,
    cid,
    codings,
    days_ago,
    clinical="active",
    verification="confirmed",
    text=None,
    category=None,
):
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
    if category:
        resource["category"] = [{"coding": [{"system": CONDITION_CAT, "code": category}]}]
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


def request(
    hook,
    pid,
    instance,
    context_extra=None,
    conditions=(),
    observations=(),
    meds=(),
    allergies=(),
):
    """A complete hook request. `allergies=None` leaves the optional allergies prefetch out (the
    EHR could not give it: allergies unknown); otherwise it is sent, empty by default."""
    context = {"userId": "Practitioner/example-clinician", "patientId": pid}
    context.update(context_extra or {})
    body = {
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
    if allergies is not None:
        body["prefetch"]["allergies"] = bundle(list(allergies))
    return body


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


RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def med(pid, mid, name, rxnorm=None, status="active", days_ago=30):
    concept = {"text": name}
    if rxnorm:
        concept["coding"] = [{"system": RX, "code": rxnorm, "display": name}]
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": day(days_ago),
    }


def vital(pid, oid, loinc, display, value, unit, days_ago):
    resource = lab(pid, oid, loinc, display, value, unit, days_ago)
    resource["category"] = [{"coding": [{"system": CAT, "code": "vital-signs"}]}]
    return resource


def finding(pid, oid, code, display, days_ago, present=True, category="exam"):
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": CAT, "code": category}]}],
        "code": {"coding": [{"system": SN, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day(days_ago) + "T10:00:00Z",
        "valueBoolean": present,
    }


def draft_med(pid, oid, name, rxnorm=None):
    resource = med(pid, oid, name, rxnorm, status="draft", days_ago=0)
    resource["intent"] = "order"
    return resource


def draft_imaging(pid, oid, system=LN, code="30679-5", display="MR Lumbar spine WO contrast"):
    resource = mri_order(pid, oid)
    resource["code"] = {"coding": [{"system": system, "code": code, "display": display}]}
    del resource["reasonCode"]
    return resource


def draft_service(pid, oid, system, code, display):
    """A draft ServiceRequest (imaging, lab panel) with no reason."""
    return draft_imaging(pid, oid, system, code, display)


def concept(*codings, text=None) -> dict:
    result = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}
    if text:
        result["text"] = text
    return result


def answer(pid, oid, codings, value, days_ago, category="exam", text=None):
    """An Observation whose answer is a coded value: a symptom finding recorded Yes / No /
    Absent, or a pregnancy status. `value` is a CodeableConcept."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": CAT, "code": category}]}],
        "code": concept(*codings, text=text),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day(days_ago) + "T10:00:00Z",
        "valueCodeableConcept": value,
    }


def allergy(pid, aid, codings, text, reaction="Hives"):
    """An AllergyIntolerance as EHRs send it: active, confirmed, coded by RxNorm ingredient
    and/or SNOMED CT substance, with the name the clinician picked as text."""
    return {
        "resourceType": "AllergyIntolerance",
        "id": aid,
        "clinicalStatus": {"coding": [{"system": ALLERGY_CLIN, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": ALLERGY_VER, "code": "confirmed"}]},
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "code": concept(*codings, text=text),
        "patient": {"reference": f"Patient/{pid}"},
        "recordedDate": day(800),
        "reaction": [
            {
                "manifestation": [concept((SN, "126485001", "Urticaria"), text=reaction)],
            }
        ],
    }


# The normal lab each LOINC code replaces (a result of the same analyte, same day, would
# otherwise make "the latest result" ambiguous).
SAME_LAB = {
    "2823-3": "k",
    "6298-4": "k",
    "2951-2": "na",
    "2947-0": "na",
    "17861-6": "ca",
    "2000-8": "ca",
    "29265-6": "ca",
    "19123-9": "mg",
    "2601-3": "mg",
}


class Case:
    """One scenario: a patient with cramps by default, normal labs unless told otherwise."""

    def __init__(
        self,
        name,
        description,
        expected,
        hook="patient-view",
        birth="1971-03-14",
        cramps=True,
        labs=True,
        gender="female",
    ):
        self.name, self.description, self.expected, self.hook = name, description, expected, hook
        self.pid, self.birth, self.gender = name, birth, gender
        self.conditions = [cramp(name)] if cramps else []
        self.observations = normal_labs(name) if labs else []
        self.meds, self.orders, self.selections = [], [], None
        self.allergies: list[dict] | None = []  # None: the allergies prefetch is left out
        self.note_text = None  # note-sign: the draft note's plain text

    def note(self, text: str):
        self.note_text = text

    def dx(self, code, display, days_ago=20, system=ICD, **kwargs):
        cid = f"{self.pid}-c{len(self.conditions)}"
        self.conditions.append(
            condition(self.pid, cid, [(system, code, display)], days_ago, **kwargs)
        )
        return self.conditions[-1]

    def obs(self, resource):
        self.observations.append(resource)
        return resource

    def lab(self, loinc, display, value, unit, days_ago=10, **extra):
        oid = f"{self.pid}-o{len(self.observations)}"
        resource = lab(self.pid, oid, loinc, display, value, unit, days_ago)
        resource.update(extra)
        # A result of an electrolyte replaces the normal one the case started with.
        if loinc in SAME_LAB:
            self.drop_lab(SAME_LAB[loinc])
        self.observations.append(resource)
        return resource

    def drop_lab(self, key):
        """Removes the normal result of one analyte ("k", "na", "ca", "mg")."""
        self.observations = [o for o in self.observations if o["id"] != f"{self.pid}-{key}"]

    def local_lab(self, code, display, text, value, unit, days_ago=10, replaces=None, ucum=True):
        """A lab under the EHR's own component code (no LOINC): readable only by its name."""
        resource = self.lab("0000-0", display, value, unit, days_ago)
        resource["code"] = concept((LOCAL_LAB, code, display), text=text)
        if not ucum:
            resource["valueQuantity"] = {"value": value, "unit": unit}
        if replaces:
            self.drop_lab(replaces)
        return resource

    def problem(self, codings, days_ago=20, **kwargs):
        """A Condition with several codings side by side (SNOMED CT and ICD-10-CM, as EHRs
        send a problem-list entry), kwargs as `condition` (text, clinical, category)."""
        cid = f"{self.pid}-c{len(self.conditions)}"
        kwargs.setdefault("category", "problem-list-item")
        self.conditions.append(condition(self.pid, cid, codings, days_ago, **kwargs))
        return self.conditions[-1]

    def named(self, text, days_ago=20, code="100001", **kwargs):
        """A Condition under an unknown local code, named in plain words (the text fallback)."""
        return self.problem([(LOCAL_DX, code, text)], days_ago, text=text, **kwargs)

    def allergy(self, codings, text):
        self.allergies.append(
            allergy(self.pid, f"{self.pid}-a{len(self.allergies)}", codings, text)
        )

    def med(self, name, rxnorm=None, ingredient=None):
        """An active medication order; `ingredient` codes it by RxNorm ingredient (display the
        ingredient name) with the product as text, as EHRs do when no product code is mapped."""
        resource = med(self.pid, f"{self.pid}-m{len(self.meds)}", name, rxnorm)
        if ingredient:
            resource["medicationCodeableConcept"] = concept((RX, *ingredient), text=name)
        self.meds.append(resource)
        return resource

    def order(self, resource, selected=True):
        self.orders.append(resource)
        if self.hook == "order-select" and selected:
            self.selections = (self.selections or []) + [
                f"{resource['resourceType']}/{resource['id']}"
            ]

    def build(self):
        extra = {}
        if self.hook in {"order-select", "order-sign"}:
            extra["draftOrders"] = {
                "resourceType": "Bundle",
                "entry": [{"resource": o} for o in self.orders],
            }
        if self.hook == "order-select":
            extra["selections"] = (
                self.selections or [f"{o['resourceType']}/{o['id']}" for o in self.orders][:1]
            )
        if self.note_text is not None:
            extra["note"] = note(self.note_text)
        body = request(
            self.hook,
            self.pid,
            self.name,
            extra,
            self.conditions,
            self.observations,
            self.meds,
            self.allergies,
        )
        body["prefetch"]["patient"] = patient(self.pid, birth=self.birth, gender=self.gender)
        return body


def cases() -> list[Case]:
    out = []

    def case(*args, **kwargs):
        out.append(Case(*args, **kwargs))
        return out[-1]

    # --- cauda-equina-red-flag
    c = case(
        "cauda-equina-coded",
        "Cauda equina syndrome coded (ICD-10-CM G83.4).",
        ["cauda-equina-red-flag"],
    )
    c.dx("G83.4", "Cauda equina syndrome", 3)
    c = case(
        "cauda-equina-retention",
        "Low back pain with urinary retention 5 days ago.",
        ["cauda-equina-red-flag"],
    )
    c.dx("M54.50", "Low back pain, unspecified", 30)
    c.dx("R33.9", "Retention of urine, unspecified", 5)
    c = case(
        "cauda-equina-saddle-text",
        "Sciatica and a condition described as saddle numbness (text and R20.0).",
        ["cauda-equina-red-flag"],
    )
    c.dx("M5441", "Lumbago with sciatica, right side", 40)
    c.dx("R20.0", "Anesthesia of skin", 2)["code"]["text"] = "Saddle numbness"
    c = case(
        "cauda-equina-saddle-site",
        "Sciatica and paraesthesia at the perineum (R20.2 with bodySite).",
        ["cauda-equina-red-flag"],
    )
    c.dx("M54.31", "Sciatica, right side", 40)
    c.dx("R20.2", "Paresthesia of skin", 4)["bodySite"] = [
        {"coding": [{"system": SN, "code": "38864007", "display": "Perineum structure"}]}
    ]
    c = case(
        "cauda-equina-bilateral-new",
        "Right sciatica for months, left sciatica 5 days ago.",
        ["cauda-equina-red-flag"],
    )
    c.dx("M54.31", "Sciatica, right side", 200)
    c.dx("M54.32", "Sciatica, left side", 5)
    c = case(
        "bilateral-sciatica-old",
        "Right and left sciatica both older than 14 days: not new, no red flag.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.dx("M54.31", "Sciatica, right side", 100)
    c.dx("M54.32", "Sciatica, left side", 60)
    c = case(
        "bladder-without-back-pain",
        "Urinary incontinence without back pain or sciatica: no red flag.",
        [],
    )
    c.dx("R32", "Unspecified urinary incontinence", 3)
    c = case(
        "bladder-change-old",
        "Low back pain with urinary retention 20 days ago: outside 14 days.",
        [],
    )
    c.dx("M54.50", "Low back pain, unspecified", 30)
    c.dx("R33.9", "Retention of urine, unspecified", 20)
    c = case("cauda-equina-refuted", "Cauda equina syndrome refuted: does not count.", [])
    c.dx("G83.4", "Cauda equina syndrome", 3, verification="refuted")
    c = case(
        "cauda-equina-exam-finding",
        "Sciatica and urinary retention recorded as an exam Observation (SNOMED).",
        ["cauda-equina-red-flag"],
    )
    c.dx("M54.41", "Lumbago with sciatica, right side", 30)
    c.obs(finding(c.pid, f"{c.pid}-ret", "267064002", "Retention of urine", 1))
    c = case(
        "cauda-equina-finding-negated",
        "Sciatica; urinary retention recorded as absent (valueBoolean false).",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.dx("M54.41", "Lumbago with sciatica, right side", 30)
    c.obs(finding(c.pid, f"{c.pid}-ret", "267064002", "Retention of urine", 1, present=False))

    # --- motor-deficit-red-flag
    c = case(
        "motor-deficit-foot-drop",
        "Sciatica and right foot drop 10 days ago (warning).",
        ["motor-deficit-red-flag", "cramp-sciatica-association"],
    )
    c.dx("M54.41", "Lumbago with sciatica, right side", 40)
    c.dx("M21.371", "Foot drop, right foot", 10)
    c = case(
        "motor-deficit-bilateral",
        "Sciatica and foot drop on both sides (critical).",
        ["motor-deficit-red-flag:critical"],
    )
    c.dx("M54.41", "Lumbago with sciatica, right side", 40)
    c.dx("M21.371", "Foot drop, right foot", 10)
    c.dx("M21.372", "Foot drop, left foot", 6)
    c = case(
        "motor-weakness-old",
        "Sciatica and muscle weakness 40 days ago: outside 30 days.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.dx("M54.16", "Radiculopathy, lumbar region", 60)
    c.dx("M62.81", "Muscle weakness (generalized)", 40)

    # --- serious-pathology-red-flag
    c = case(
        "serious-cancer-history",
        "Low back pain and a history of breast cancer (Z85.3), age 60.",
        ["serious-pathology-red-flag"],
        birth="1966-05-01",
    )
    c.dx("M54.50", "Low back pain, unspecified", 20)
    c.dx("Z85.3", "Personal history of malignant neoplasm of breast", 900)
    c = case(
        "serious-fever-fahrenheit",
        "Sciatica and a temperature of 101.2 degF two days ago.",
        ["serious-pathology-red-flag", "cramp-sciatica-association"],
    )
    c.dx("M54.31", "Sciatica, right side", 20)
    c.obs(vital(c.pid, f"{c.pid}-t", "8310-5", "Body temperature", 101.2, "[degF]", 2))
    c = case(
        "serious-fever-below",
        "Sciatica and a temperature of 37.9 Cel: not a fever.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.dx("M54.31", "Sciatica, right side", 20)
    c.obs(vital(c.pid, f"{c.pid}-t", "8310-5", "Body temperature", 37.9, "Cel", 2))
    c = case(
        "serious-weight-loss-kg",
        "Low back pain; weight 80 kg 200 days ago, 75 kg now (6.25 % loss).",
        ["serious-pathology-red-flag"],
    )
    c.dx("M54.50", "Low back pain, unspecified", 20)
    c.obs(vital(c.pid, f"{c.pid}-w1", "29463-7", "Body weight", 80, "kg", 200))
    c.obs(vital(c.pid, f"{c.pid}-w2", "29463-7", "Body weight", 75, "kg", 3))
    c = case(
        "serious-weight-loss-lb",
        "The same loss in pounds: 176.4 [lb_av] to 165.3 [lb_av].",
        ["serious-pathology-red-flag"],
    )
    c.dx("M54.50", "Low back pain, unspecified", 20)
    c.obs(vital(c.pid, f"{c.pid}-w1", "29463-7", "Body weight", 176.4, "[lb_av]", 200))
    c.obs(vital(c.pid, f"{c.pid}-w2", "29463-7", "Body weight", 165.3, "[lb_av]", 3))
    c = case(
        "serious-weight-loss-small",
        "Low back pain; 80 kg to 77 kg (3.75 %): below the 5 % cut-off.",
        [],
    )
    c.dx("M54.50", "Low back pain, unspecified", 20)
    c.obs(vital(c.pid, f"{c.pid}-w1", "29463-7", "Body weight", 80, "kg", 200))
    c.obs(vital(c.pid, f"{c.pid}-w2", "29463-7", "Body weight", 77, "kg", 3))
    c = case(
        "serious-age-only",
        "Low back pain at 75 with no other flag: age alone never fires.",
        [],
        birth="1951-01-01",
    )
    c.dx("M54.50", "Low back pain, unspecified", 20)
    c = case(
        "serious-steroids-snomed-lbp",
        "Low back pain (SNOMED) and long-term systemic steroids (Z79.52).",
        ["serious-pathology-red-flag"],
    )
    c.dx("279039007", "Low back pain", 20, system=SN)
    c.dx("Z7952", "Long term (current) use of systemic steroids", 400)

    # --- electrolyte-cramp-cause and cramp-labs-missing
    c = case(
        "electrolyte-potassium-low",
        "Potassium 3.4 mmol/L 10 days ago.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("2823-3", "Potassium", 3.4, "mmol/L")
    c = case("electrolyte-potassium-boundary", "Potassium exactly 3.5 mmol/L: not low.", [])
    c.lab("2823-3", "Potassium", 3.5, "mmol/L")
    c = case(
        "electrolyte-potassium-meq",
        "Potassium 3.4 mEq/L: mEq/L equals mmol/L.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("2823-3", "Potassium", 3.4, "mEq/L")
    c = case(
        "electrolyte-potassium-91-days",
        "Potassium 3.0 mmol/L 91 days ago: too old; other labs normal.",
        [],
    )
    c.lab("2823-3", "Potassium", 3.0, "mmol/L", days_ago=91)
    c = case(
        "electrolyte-magnesium-mmol",
        "Magnesium 0.65 mmol/L (1.58 mg/dL).",
        ["electrolyte-cramp-cause"],
    )
    c.lab("2601-3", "Magnesium [Moles/volume] in Serum or Plasma", 0.65, "mmol/L")
    c = case(
        "electrolyte-magnesium-mgdl",
        "Magnesium 1.58 mg/dL: the same answer as in mmol/L.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("19123-9", "Magnesium", 1.58, "mg/dL")
    c = case("electrolyte-calcium-mmol-normal", "Calcium 2.20 mmol/L (8.82 mg/dL): not low.", [])
    c.lab("17861-6", "Calcium", 2.20, "mmol/L")
    c = case(
        "electrolyte-calcium-mmol-low",
        "Calcium 2.05 mmol/L (8.22 mg/dL): low.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("17861-6", "Calcium", 2.05, "mmol/L")
    c = case(
        "electrolyte-interpretation-normal",
        "Potassium 3.3 mmol/L flagged N by the lab: interpretation decides.",
        [],
    )
    c.lab(
        "2823-3",
        "Potassium",
        3.3,
        "mmol/L",
        interpretation=[{"coding": [{"system": INTERP, "code": "N", "display": "Normal"}]}],
    )
    c = case(
        "electrolyte-reference-range",
        "Sodium 134 with the lab's reference range 133-145: not low.",
        [],
    )
    c.lab(
        "2951-2",
        "Sodium",
        134,
        "mmol/L",
        referenceRange=[
            {
                "low": {"value": 133, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
                "high": {"value": 145, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
            }
        ],
    )
    c = case(
        "electrolyte-dehydration",
        "Dehydration (E86.0) active, labs normal.",
        ["electrolyte-cramp-cause"],
    )
    c.dx("E86.0", "Dehydration", 5)
    c = case(
        "labs-unit-not-interpretable",
        "Only a potassium in an unconvertible unit: named, not used.",
        ["cramp-labs-missing"],
        labs=False,
    )
    c.lab("2823-3", "Potassium", 3.0, "mg")

    # --- medication-cramp-cause
    c = case("medication-diuretic", "Furosemide (RxNorm 4603) active.", ["medication-cramp-cause"])
    c.med("furosemide 40 MG Oral Tablet", "4603")
    c = case(
        "medication-statin-by-name",
        "Atorvastatin recorded by name only, no code.",
        ["medication-cramp-cause"],
    )
    c.med("Lipitor (atorvastatin) 20 mg tablet")
    c = case("medication-stopped", "Furosemide stopped: does not count.", [])
    c.meds.append(med(c.pid, f"{c.pid}-m0", "furosemide", "4603", status="stopped"))

    # --- comorbidity-cramp-cause
    c = case("comorbidity-tsh-high", "TSH 7.2 mIU/L 3 months ago.", ["comorbidity-cramp-cause"])
    c.lab("3016-3", "TSH", 7.2, "m[IU]/L", days_ago=90)
    c = case("comorbidity-egfr-low", "eGFR 55 mL/min/1.73m2.", ["comorbidity-cramp-cause"])
    c.lab("98979-8", "eGFR CKD-EPI 2021", 55, "mL/min/{1.73_m2}", days_ago=30)
    c = case(
        "comorbidity-several",
        "Pregnancy (SNOMED), PAD (I73.9) and type 2 diabetes (E11.9).",
        ["comorbidity-cramp-cause"],
    )
    c.dx("77386006", "Pregnancy", 60, system=SN)
    c.dx("I73.9", "Peripheral vascular disease, unspecified", 400)
    c.dx("E119", "Type 2 diabetes mellitus without complications", 800)

    # --- cramp-sciatica-association and sciatica-management
    c = case(
        "association-both-features",
        "Sciatica, calf cramps (M62.831) and paraesthesia: warning.",
        ["cramp-sciatica-association:warning", "sciatica-management"],
        cramps=False,
    )
    c.conditions.append(cramp(c.pid, code="M62.831", display="Muscle spasm of calf muscle"))
    c.dx("M54.41", "Lumbago with sciatica, right side", 30)
    c.dx("R20.2", "Paresthesia of skin", 20)
    c = case(
        "association-site-by-bodysite",
        "Sciatica (SNOMED) and a cramp with bodySite hamstring (text): info.",
        ["cramp-sciatica-association", "sciatica-management"],
        cramps=False,
    )
    cr = cramp(c.pid)
    cr["bodySite"] = [{"text": "Left hamstring"}]
    c.conditions.append(cr)
    c.dx("23056005", "Sciatica", 30, system=SN)
    c = case(
        "management-older-adult",
        "Sciatica at 72: muscle relaxants best avoided (Beers).",
        ["cramp-sciatica-association", "sciatica-management"],
        birth="1954-02-02",
    )
    c.dx("M54.31", "Sciatica, right side", 30)
    c = case(
        "management-nsaid-blocked",
        "Sciatica with heart failure: no NSAID suggested.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.dx("M54.31", "Sciatica, right side", 30)
    c.dx("I50.9", "Heart failure, unspecified", 300)
    c = case(
        "mixed-three-causes",
        "Sciatica with calf cramps and nerve symptoms, low potassium, furosemide and"
        " hypothyroidism: three other causes, association stays info.",
        [
            "electrolyte-cramp-cause",
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ],
        cramps=False,
    )
    c.conditions.append(cramp(c.pid, code="M62.831", display="Muscle spasm of calf muscle"))
    c.dx("M54.41", "Lumbago with sciatica, right side", 30)
    c.dx("R20.2", "Paresthesia of skin", 20)
    c.lab("2823-3", "Potassium", 3.1, "mmol/L")
    c.med("furosemide 40 MG Oral Tablet", "4603")
    c.dx("E03.9", "Hypothyroidism, unspecified", 700)
    c = case("sciatica-refuted", "Sciatica refuted, cramps with normal labs: no cards.", [])
    c.dx("M54.31", "Sciatica, right side", 30, verification="refuted")
    c = case(
        "cramps-resolved",
        "Cramp condition resolved: no cramps reported, no cards.",
        [],
        cramps=False,
        labs=False,
    )
    c.conditions.append(
        condition(
            c.pid, f"{c.pid}-cramp", [(ICD, "R25.2", "Cramp and spasm")], 10, clinical="resolved"
        )
    )
    c = case(
        "cramp-exam-finding",
        "Cramps recorded only as an exam finding (SNOMED 55300003) 10 days ago.",
        ["cramp-labs-missing"],
        cramps=False,
        labs=False,
    )
    c.obs(finding(c.pid, f"{c.pid}-f", "55300003", "Cramp", 10))
    c = case(
        "cramp-exam-finding-absent",
        "A cramp finding recorded as absent: no cramps reported.",
        [],
        cramps=False,
        labs=False,
    )
    c.obs(finding(c.pid, f"{c.pid}-f", "55300003", "Cramp", 10, present=False))
    c = case(
        "cramp-survey-finding-31-days",
        "A cramp survey finding 31 days ago: outside 30 days.",
        [],
        cramps=False,
        labs=False,
    )
    c.obs(finding(c.pid, f"{c.pid}-f", "55300003", "Cramp", 31, category="survey"))

    # --- order checks, each at order-select and order-sign
    for hook in ("order-select", "order-sign"):
        short = hook.split("-")[1]
        c = case(
            f"imaging-early-{short}",
            f"{hook}: lumbar MRI 3 weeks after sciatica began, no red flags (v2: the "
            "association and management cards are not repeated at order hooks).",
            ["imaging-stewardship"],
            hook=hook,
        )
        c.dx("M54.31", "Sciatica, right side", 21)
        c.order(draft_imaging(c.pid, "mri"))
        c = case(
            f"quinine-{short}",
            f"{hook}: quinine ordered for cramps.",
            ["quinine-caution"],
            hook=hook,
        )
        c.order(draft_med(c.pid, "quinine", "quinine sulfate 324 MG Oral Capsule"))
        c = case(
            f"nsaid-ckd-{short}",
            f"{hook}: ibuprofen ordered with eGFR 25 (< 30: contraindicated, warning; v2: the "
            "comorbidity card is not repeated at order hooks).",
            ["nsaid-caution:warning"],
            hook=hook,
        )
        c.lab("33914-3", "eGFR MDRD", 25, "mL/min/1.73m2", days_ago=40)
        c.order(draft_med(c.pid, "ibu", "ibuprofen 400 MG Oral Tablet", "197805"))
    c = case(
        "imaging-cpt-lbp-sign",
        "order-sign: lumbar MRI by CPT 72148, low back pain 10 days old.",
        ["imaging-stewardship"],
        hook="order-sign",
    )
    c.dx("M54.50", "Low back pain, unspecified", 10)
    c.order(draft_imaging(c.pid, "mri", CPT, "72148", "MRI lumbar spine without contrast"))
    c = case(
        "imaging-after-six-weeks",
        "order-sign: lumbar MRI 8 weeks after low back pain began: no card.",
        [],
        hook="order-sign",
    )
    c.dx("M54.50", "Low back pain, unspecified", 56)
    c.order(draft_imaging(c.pid, "mri"))
    c = case(
        "imaging-with-red-flag",
        "order-sign: early lumbar MRI with a cancer history: the red flag justifies it.",
        ["serious-pathology-red-flag"],
        hook="order-sign",
    )
    c.dx("M54.50", "Low back pain, unspecified", 10)
    c.dx("C50.911", "Malignant neoplasm of unspecified site of right female breast", 300)
    c.order(draft_imaging(c.pid, "mri"))
    c = case(
        "quinine-not-selected",
        "order-select: quinine is a draft but not the selected order: no card.",
        [],
        hook="order-select",
    )
    c.order(draft_med(c.pid, "quinine", "quinine sulfate 324 MG Oral Capsule"), selected=False)
    c.order(draft_imaging(c.pid, "xr", CPT, "72040", "X-ray cervical spine"))
    c = case(
        "nsaid-no-contraindication",
        "order-sign: naproxen ordered, no contraindication: no card.",
        [],
        hook="order-sign",
    )
    c.order(draft_med(c.pid, "npx", "naproxen 500 MG Oral Tablet", "198013"))
    c = case(
        "nsaid-anticoagulant-sign",
        "order-sign: naproxen ordered while on apixaban (contraindication: warning).",
        ["nsaid-caution:warning"],
        hook="order-sign",
    )
    c.med("apixaban 5 MG Oral Tablet")
    c.order(draft_med(c.pid, "npx", "naproxen 500 MG Oral Tablet", "198013"))

    # --- note signing: what the draft note's text says (issue 6); invented notes
    note_sign = "dev.crampcds.note-sign"
    c = case(
        "note-sign-cramps-in-note-only",
        "Note signing: cramps only in the note (trigger 4), nothing coded, no labs.",
        ["cramp-labs-missing"],
        hook=note_sign,
        cramps=False,
        labs=False,
    )
    c.note("HPI: pt c/o cramping in both calves at night for 3 wk. No back pain.")
    c = case(
        "note-sign-cauda-equina-from-note",
        "Note signing: back pain with new urinary retention and saddle numbness, all only in the "
        "note; cramps coded, normal labs.",
        ["cauda-equina-red-flag"],
        hook=note_sign,
    )
    c.note(
        "HPI: 47F with low back pain radiating down the left leg for 3 weeks, now with new "
        "urinary retention since this morning and numbness in the saddle area.\n"
        "Exam: reduced perianal sensation. Afebrile.\n"
        "Plan: emergency MRI lumbar spine."
    )
    c = case(
        "note-sign-red-flags-negated",
        "Note signing: sciatica and calf cramps in the note; red flags denied, past, "
        "hypothetical or in the family: association and management only.",
        ["cramp-sciatica-association", "sciatica-management"],
        hook=note_sign,
        cramps=False,
    )
    c.note(
        "Subjective: right sciatica for 2 weeks; pt c/o cramps in the right calf at night.\n"
        "Denies saddle anaesthesia, urinary retention or bowel incontinence. No leg weakness.\n"
        "PMH: foot drop in 2015, recovered.\n"
        "Family history: mother with cauda equina syndrome.\n"
        "Return precautions: return if numbness, weakness or loss of bladder control develops."
    )
    c = case(
        "note-sign-foot-drop-both-sides",
        "Note signing: coded sciatica; the note says both feet drop: critical motor deficit, and "
        "a bilateral neurological deficit of the legs, a cauda equina red flag (NICE CKS).",
        ["cauda-equina-red-flag", "motor-deficit-red-flag:critical"],
        hook=note_sign,
    )
    c.dx("M54.41", "Lumbago with sciatica, right side", 20)
    c.note("Exam: bilateral foot drop, steppage gait. Bladder and bowel control normal.")
    c = case(
        "note-sign-fever-weight-loss",
        "Note signing: back pain with fever and weight loss written in the note; cramps coded.",
        ["serious-pathology-red-flag"],
        hook=note_sign,
    )
    c.note(
        "71M with 6 weeks of low back pain, worse at night, with fevers for a week and "
        "unintentional weight loss of 8 kg. Denies numbness or incontinence."
    )
    c = case(
        "note-sign-possible-numbness",
        "Note signing: sciatica and calf cramps in the note, numbness only possible: it "
        "supports the association (warning) and fires no red flag.",
        ["cramp-sciatica-association:warning", "sciatica-management"],
        hook=note_sign,
        cramps=False,
    )
    c.note("Left sciatica; cramps in the left calf. Possible numbness in the left foot.")
    v2_cases(case)
    return out


# Codings as EHRs send them, SNOMED CT and ICD-10-CM side by side on one problem-list entry.
LBP = [(SN, "279039007", "Low back pain"), (ICD, "M54.50", "Low back pain, unspecified")]
SCIATICA_R = [(SN, "23056005", "Sciatica"), (ICD, "M54.41", "Lumbago with sciatica, right side")]
SCIATICA_L = [(SN, "23056005", "Sciatica"), (ICD, "M54.42", "Lumbago with sciatica, left side")]
CALF_CRAMP = [(ICD, "M62.831", "Muscle spasm of calf muscle")]
IBUPROFEN_400 = ("ibuprofen 400 MG Oral Tablet", "197805")
NAPROXEN_500 = ("naproxen 500 MG Oral Tablet", "198013")
NEGATIONS = {
    "no": (SN, "373067005", "No"),
    "absent": (SN, "2667000", "Absent"),
    "known-absent": (SN, "410516002", "Known absent"),
    "negative": (SN, "260385009", "Negative"),
    "v2-n": (V2_0136, "N", "No"),
}


def v2_cases(case) -> None:
    """One or more scenarios per change of catalog version 2, coded the way EHRs code them.
    Every expectation is read from CLINICAL_RULES.md v2 alone."""
    # --- cauda equina: SNOMED-coded signs, no cramp gate, 14-day window, plain-words notes
    c = case(
        "v2-ces-snomed-retention-faecal",
        "Low back pain (SNOMED + ICD-10-CM) with acute retention of urine (236648008) and "
        "incontinence of faeces (72042002), both coded in SNOMED CT only, 2 days ago: critical.",
        ["cauda-equina-red-flag"],
    )
    c.problem(LBP, 25)
    c.problem([(SN, "236648008", "Acute retention of urine")], 2)
    c.problem([(SN, "72042002", "Incontinence of feces")], 2)
    c = case(
        "v2-ces-snomed-no-cramps",
        "The same signs and back pain with no cramps reported anywhere: the cauda equina card "
        "fires anyway (safety exception to the trigger).",
        ["cauda-equina-red-flag"],
        cramps=False,
        labs=False,
    )
    c.problem(LBP, 25)
    c.problem([(SN, "236648008", "Acute retention of urine")], 2)
    c.problem([(SN, "72042002", "Incontinence of feces")], 2)
    c = case(
        "v2-ces-bladder-no-back-pain",
        "Cramps with acute urinary retention and faecal incontinence (SNOMED) but no back pain "
        "or sciatica anywhere: bladder symptoms alone do not fire.",
        [],
    )
    c.problem([(SN, "236648008", "Acute retention of urine")], 2)
    c.problem([(SN, "72042002", "Incontinence of feces")], 2)
    for days, expected in ((13, ["cauda-equina-red-flag"]), (15, [])):
        c = case(
            f"v2-ces-retention-{days}-days",
            f"Low back pain for 6 weeks; acute retention of urine dated {days} days ago "
            f"({'inside' if days < 14 else 'outside'} the 14-day window).",
            expected,
        )
        c.problem(LBP, 42)
        c.problem([(SN, "236648008", "Acute retention of urine")], days)
    c = case(
        "v2-ces-note-numb-bum",
        "Note signing: sciatica coded, cramps coded; the note says in plain words 'numb bum and "
        "groin, can't feel the toilet paper, has not voided since last night' (saddle "
        "anaesthesia and retention): critical only: no association card (a critical card "
        "fired), no management card, so no one-click ibuprofen.",
        ["cauda-equina-red-flag"],
        hook="dev.crampcds.note-sign",
    )
    c.problem(SCIATICA_L, 21)
    c.note(
        "S: L sciatica x3 wk, still getting cramps in the L calf at night. Today says she has a "
        "numb bum and groin, can't feel the toilet paper, has not voided since last night.\n"
        "O: Tender L lumbar paraspinals. SLR positive on the L at 40 degrees."
    )
    c = case(
        "v2-ces-note-urine-stream",
        "Note signing: low back pain coded; the note says 'trouble starting her urine stream' "
        "(voiding difficulty, a CES sign): critical.",
        ["cauda-equina-red-flag"],
        hook="dev.crampcds.note-sign",
    )
    c.problem(LBP, 10)
    c.note(
        "Low back pain for 10 days after lifting boxes. Since yesterday she has had trouble "
        "starting her urine stream. Calf cramps at night as before."
    )
    c = case(
        "v2-ces-saddle-local-code",
        "Sciatica; saddle numbness recorded as a Condition under an unknown local code, "
        "named 'Numbness of buttocks and perineum' (text fallback): critical.",
        ["cauda-equina-red-flag"],
    )
    c.problem(SCIATICA_R, 30)
    c.named("Numbness of buttocks and perineum", 3, code="458231")
    c = case(
        "v2-ces-r200-perineum",
        "Sciatica; R20.0 anaesthesia of skin with bodySite perineum (38864007): saddle "
        "anaesthesia, critical.",
        ["cauda-equina-red-flag"],
    )
    c.problem(SCIATICA_R, 30)
    c.problem([(ICD, "R20.0", "Anesthesia of skin")], 3)["bodySite"] = [
        concept((SN, "38864007", "Perineal structure"), text="Perineum")
    ]
    c = case(
        "v2-ces-r200-no-site",
        "Sciatica; R20.0 anaesthesia of skin with no body site: an ordinary nerve symptom "
        "(cramp site not on the sciatic path, so the association stays info).",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.problem(SCIATICA_R, 30)
    c.problem([(ICD, "R20.0", "Anesthesia of skin")], 3)
    c = case(
        "v2-ces-hesitancy-r3911",
        "Low back pain; hesitancy of micturition R39.11 four days ago (voiding difficulty): "
        "critical.",
        ["cauda-equina-red-flag"],
    )
    c.problem(LBP, 20)
    c.problem([(ICD, "R39.11", "Hesitancy of micturition")], 4)
    c = case(
        "v2-ces-diagnosis-by-name",
        "No cramps; a Condition 'Cauda equina syndrome' under an unknown local code (text "
        "fallback; the diagnosis alone fires, no cramp gate): critical.",
        ["cauda-equina-red-flag"],
        cramps=False,
        labs=False,
    )
    c.named("Cauda equina syndrome", 1, code="771204")
    c = case(
        "v2-ces-rule-out-in-note",
        "Note signing: low back pain coded; the note plans an MRI 'to r/o CES' and records "
        "normal bladder and bowel: a rule-out is not a diagnosis, no card (no sciatica, labs "
        "normal).",
        [],
        hook="dev.crampcds.note-sign",
    )
    c.problem(LBP, 12)
    c.note(
        "Low back pain for 12 days, no radiation. Bladder and bowel function normal, perianal "
        "sensation intact. Night cramps in the right calf.\n"
        "Plan: MRI lumbar spine to r/o CES given severity of pain."
    )
    c = case(
        "v2-ces-post-void-residual-by-name",
        "Low back pain; a bladder scan under a local code named 'POST VOID RESIDUAL', 450 mL "
        "yesterday (over 200 mL: retention): critical.",
        ["cauda-equina-red-flag"],
    )
    c.problem(LBP, 9)
    pvr = c.local_lab("30110", "POST VOID RESIDUAL", "Post-void residual volume", 450, "mL", 1)
    pvr["category"] = [{"coding": [{"system": CAT, "code": "exam"}]}]

    # --- motor deficit: SNOMED-only weakness and numbness, bilateral foot drop, 30-day window
    c = case(
        "v2-motor-snomed-weakness-numbness",
        "Sciatica (SNOMED + ICD-10-CM) with muscle weakness 26544005 and numbness 44077006 coded "
        "in SNOMED CT only, calf cramps: motor warning; the association card (warning: calf "
        "site and a nerve symptom, no other cause) must not say no nerve symptoms are recorded.",
        ["motor-deficit-red-flag", "cramp-sciatica-association:warning"],
        cramps=False,
    )
    c.problem(CALF_CRAMP, 6)
    c.problem(SCIATICA_R, 30)
    c.problem([(SN, "26544005", "Muscle weakness")], 5)
    c.problem([(SN, "44077006", "Numbness")], 5)
    c = case(
        "v2-motor-foot-drop-both-sides",
        "Sciatica; foot drop right (M21.371) and left (M21.372), each with SNOMED 6077001 "
        "beside it: bilateral, critical (no association card beside a critical one).",
        ["motor-deficit-red-flag:critical"],
    )
    c.problem(SCIATICA_R, 40)
    c.problem([(SN, "6077001", "Foot drop"), (ICD, "M21.371", "Foot drop, right foot")], 8)
    c.problem([(SN, "6077001", "Foot drop"), (ICD, "M21.372", "Foot drop, left foot")], 4)
    c = case(
        "v2-motor-foot-drop-bilateral-text",
        "Sciatica; one foot-drop entry M21.379 whose text says 'Bilateral foot drop': "
        "bilateral, critical.",
        ["motor-deficit-red-flag:critical"],
    )
    c.problem(SCIATICA_R, 40)
    c.problem([(ICD, "M21.379", "Foot drop, unspecified foot")], 4, text="Bilateral foot drop")
    for days, expected in (
        (29, ["motor-deficit-red-flag", "cramp-sciatica-association"]),
        (31, ["cramp-sciatica-association", "sciatica-management"]),
    ):
        c = case(
            f"v2-motor-weakness-{days}-days",
            f"Sciatica; muscle weakness (SNOMED 26544005) dated {days} days ago "
            f"({'inside' if days < 30 else 'outside'} the 30-day window).",
            expected,
        )
        c.problem(SCIATICA_R, 60)
        c.problem([(SN, "26544005", "Muscle weakness")], days)

    # --- NSAID contraindications and cautions; allergies read, or unknown
    sign = "order-sign"
    pregnancy = [
        (ICD, "Z34.02", "Encounter for supervision of normal first pregnancy, second trimester"),
        (ICD, "Z3A.24", "24 weeks gestation of pregnancy"),
    ]
    c = case(
        "v2-nsaid-pregnant-patient-view",
        "Pregnant woman of 29 coded only Z34.02 + Z3A.24, with sciatica: pregnancy is a "
        "comorbidity cause; the management card must not offer ibuprofen (pregnancy: "
        "contraindication) and says which reason withheld it.",
        ["comorbidity-cramp-cause", "cramp-sciatica-association", "sciatica-management"],
        birth="1997-04-02",
    )
    c.problem(SCIATICA_R, 15)
    for coding in pregnancy:
        c.problem([coding], 28)
    c = case(
        "v2-nsaid-pregnant-order-sign",
        "The same pregnant woman (Z34.02 + Z3A.24) at order-sign with ibuprofen 400 mg being "
        "signed: contraindication, nsaid-caution warning.",
        ["nsaid-caution:warning"],
        hook=sign,
        birth="1997-04-02",
    )
    c.problem(SCIATICA_R, 15)
    for coding in pregnancy:
        c.problem([coding], 28)
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    triple_whammy_birth = "1948-06-30"  # 78
    c = case(
        "v2-nsaid-older-acei-thiazide-patient-view",
        "78-year-old on lisinopril and hydrochlorothiazide with eGFR 42 (12 days ago) and "
        "sciatica: thiazide named as a cramp cause, eGFR < 60 as a comorbidity; the "
        "management card offers no one-click ibuprofen (cautions: age 65+, eGFR 30-59, ACE "
        "inhibitor with a diuretic) and names them.",
        [
            "medication-cramp-cause",
            "comorbidity-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ],
        birth=triple_whammy_birth,
        gender="male",
    )
    c.problem(SCIATICA_R, 20)
    c.med("lisinopril 10 MG Oral Tablet", "314076")
    c.med("hydrochlorothiazide 25 MG Oral Tablet", "310798")
    c.lab("98979-8", "eGFR (CKD-EPI 2021)", 42, "mL/min/{1.73_m2}", days_ago=12)
    c = case(
        "v2-nsaid-older-acei-thiazide-order-sign",
        "The same 78-year-old at order-sign with ibuprofen being signed: cautions only (age, "
        "eGFR 42, ACE inhibitor + thiazide), nsaid-caution info.",
        ["nsaid-caution:info"],
        hook=sign,
        birth=triple_whammy_birth,
        gender="male",
    )
    c.problem(SCIATICA_R, 20)
    c.med("lisinopril 10 MG Oral Tablet", "314076")
    c.med("hydrochlorothiazide 25 MG Oral Tablet", "310798")
    c.lab("98979-8", "eGFR (CKD-EPI 2021)", 42, "mL/min/{1.73_m2}", days_ago=12)
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    c = case(
        "v2-nsaid-duplicate-naproxen-sign",
        "order-sign: naproxen 500 mg being signed while ibuprofen 600 mg is active: duplicate "
        "NSAID therapy, nsaid-caution warning.",
        ["nsaid-caution:warning"],
        hook=sign,
    )
    c.med("ibuprofen 600 MG Oral Tablet", "197806")
    c.order(draft_med(c.pid, "npx", *NAPROXEN_500))
    ibuprofen_allergy = [(RX, "5640", "ibuprofen"), (SN, "387207008", "Ibuprofen (substance)")]
    c = case(
        "v2-nsaid-allergy-order-sign",
        "order-sign: naproxen being signed; AllergyIntolerance to ibuprofen (RxNorm ingredient "
        "and SNOMED substance): NSAID allergy, nsaid-caution warning.",
        ["nsaid-caution:warning"],
        hook=sign,
    )
    c.allergy(ibuprofen_allergy, "Ibuprofen")
    c.order(draft_med(c.pid, "npx", *NAPROXEN_500))
    c = case(
        "v2-nsaid-allergy-patient-view",
        "Sciatica with an ibuprofen allergy: association and management; the management card "
        "offers no one-click ibuprofen (NSAID allergy).",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.problem(SCIATICA_R, 20)
    c.allergy(ibuprofen_allergy, "Ibuprofen")
    c = case(
        "v2-nsaid-allergy-class-text",
        "order-sign: ibuprofen being signed; an allergy recorded only as text 'NSAIDS' under a "
        "local code (class allergy read by name): nsaid-caution warning.",
        ["nsaid-caution:warning"],
        hook=sign,
    )
    c.allergy([(LOCAL_ALLERGEN, "40917", "NSAIDS")], "NSAIDS")
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    for egfr, expected, says in (
        (29, "warning", "below 30: contraindicated"),
        (30, "info", "30-59: a caution, not a contraindication"),
    ):
        c = case(
            f"v2-nsaid-egfr-{egfr}-sign",
            f"order-sign: ibuprofen being signed with eGFR {egfr} 20 days ago ({says}): "
            f"nsaid-caution {expected}.",
            [f"nsaid-caution:{expected}"],
            hook=sign,
        )
        c.lab("98979-8", "eGFR (CKD-EPI 2021)", egfr, "mL/min/{1.73_m2}", days_ago=20)
        c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    for age, birth, expected in (
        (64, "1961-11-21", []),  # 65 tomorrow
        (65, "1961-11-19", ["nsaid-caution:info"]),  # 65 yesterday
    ):
        c = case(
            f"v2-nsaid-age-{age}-sign",
            f"order-sign: ibuprofen being signed at age {age} (born {birth}), nothing else: "
            + ("no caution below 65." if age < 65 else "age 65+ is a caution: info card."),
            expected,
            hook=sign,
            birth=birth,
        )
        c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    c = case(
        "v2-nsaid-allergies-unknown-sign",
        "order-sign: ibuprofen being signed; the allergies prefetch is absent and no FHIR "
        "server is named (allergies could not be read): a caution, nsaid-caution info.",
        ["nsaid-caution:info"],
        hook=sign,
    )
    c.allergies = None
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    c = case(
        "v2-nsaid-allergies-unknown-patient-view",
        "Sciatica; the allergies prefetch is absent: the management card offers no one-click "
        "NSAID and says allergies could not be read.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.allergies = None
    c.problem(SCIATICA_R, 20)
    c = case(
        "v2-nsaid-gi-bleed-sign",
        "order-sign: naproxen being signed; gastrointestinal haemorrhage K92.2 active, 200 "
        "days ago: contraindication, warning.",
        ["nsaid-caution:warning"],
        hook=sign,
    )
    c.problem([(ICD, "K92.2", "Gastrointestinal hemorrhage, unspecified")], 200)
    c.order(draft_med(c.pid, "npx", *NAPROXEN_500))
    c = case(
        "v2-nsaid-low-dose-aspirin-sign",
        "order-sign: ibuprofen being signed while on aspirin 81 mg (an antiplatelet, not an "
        "NSAID at this dose, so no duplicate therapy): caution, info.",
        ["nsaid-caution:info"],
        hook=sign,
    )
    c.med("aspirin 81 MG Delayed Release Oral Tablet", ingredient=("1191", "aspirin"))
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))
    c = case(
        "v2-nsaid-ssri-sign",
        "order-sign: ibuprofen being signed while on sertraline (SSRI): caution, info.",
        ["nsaid-caution:info"],
        hook=sign,
    )
    c.med("sertraline 50 MG Oral Tablet", ingredient=("36437", "sertraline"))
    c.order(draft_med(c.pid, "ibu", *IBUPROFEN_400))

    # --- electrolytes: severity, fluid rule, ionized calcium, odd units, local codes
    k_low = "v2-electrolyte"
    c = case(
        f"{k_low}-sodium-thiazide",
        "Sciatica, sodium 128 mmol/L while on hydrochlorothiazide: electrolyte warning naming "
        "the thiazide; the management card must withhold the fluid advice ('do not advise "
        "extra fluids; review the thiazide') — only the rule ids are asserted here.",
        [
            "electrolyte-cramp-cause",
            "medication-cramp-cause",
            "cramp-sciatica-association",
            "sciatica-management",
        ],
    )
    c.problem(SCIATICA_R, 20)
    c.med("hydrochlorothiazide 25 MG Oral Tablet", "310798")
    c.lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", 128, "mmol/L", days_ago=3)
    c = case(
        f"{k_low}-potassium-ll",
        "Potassium 2.9 mmol/L flagged LL by the lab: markedly low (act today).",
        ["electrolyte-cramp-cause"],
    )
    c.lab(
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
        2.9,
        "mmol/L",
        days_ago=2,
        interpretation=[concept((INTERP, "LL", "Critical low"))],
    )
    for value, says in ((3.0, "low, not markedly low"), (2.99, "markedly low (< 3.0)")):
        c = case(
            f"{k_low}-potassium-{str(value).replace('.', '-')}",
            f"Potassium {value} mmol/L, no interpretation, no range: {says}.",
            ["electrolyte-cramp-cause"],
        )
        c.lab("2823-3", "Potassium", value, "mmol/L", days_ago=2)
    c = case(
        f"{k_low}-potassium-3-5-meq",
        "Potassium 3.5 mEq/L (= 3.5 mmol/L): not low.",
        [],
    )
    c.lab("2823-3", "Potassium", 3.5, "mEq/L")
    c = case(
        f"{k_low}-potassium-3-4-meq",
        "Potassium 3.4 mEq/L (= 3.4 mmol/L) under LOINC 6298-4 (blood): low.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("6298-4", "Potassium [Moles/volume] in Blood", 3.4, "mEq/L")
    c = case(
        f"{k_low}-calcium-2000-8-mmol",
        "Calcium under LOINC 2000-8 (moles), 2.02 mmol/L = 8.10 mg/dL: low.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("2000-8", "Calcium [Moles/volume] in Serum or Plasma", 2.02, "mmol/L")
    c = case(
        f"{k_low}-calcium-2000-8-normal",
        "Calcium under LOINC 2000-8, 2.30 mmol/L = 9.22 mg/dL: not low.",
        [],
    )
    c.lab("2000-8", "Calcium [Moles/volume] in Serum or Plasma", 2.30, "mmol/L")
    c = case(
        f"{k_low}-ionized-calcium-low",
        "Ionized calcium 1.05 mmol/L (LOINC 1994-3; below 1.12): low; total calcium normal.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("1994-3", "Calcium.ionized [Moles/volume] in Blood", 1.05, "mmol/L", days_ago=4)
    c = case(
        f"{k_low}-ionized-calcium-normal",
        "Ionized calcium 1.15 mmol/L, the only calcium: not low, and never read as a total "
        "calcium (1.15 mmol/L total would be 4.6 mg/dL, low).",
        [],
    )
    c.drop_lab("ca")
    c.lab("1994-3", "Calcium.ionized [Moles/volume] in Blood", 1.15, "mmol/L", days_ago=4)
    c = case(
        f"{k_low}-ionized-calcium-by-name",
        "A local lab code named 'CALCIUM, IONIZED', 1.15 mmol/L, the only calcium: read by "
        "name as ionized (not low), never as a total calcium.",
        [],
    )
    c.local_lab("1558", "CALCIUM, IONIZED", "Calcium, Ionized", 1.15, "mmol/L", replaces="ca")
    c = case(
        f"{k_low}-magnesium-meq-low",
        "Magnesium 1.2 mEq/L = 0.6 mmol/L = 1.46 mg/dL: low.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("19123-9", "Magnesium", 1.2, "mEq/L")
    c = case(
        f"{k_low}-magnesium-meq-normal",
        "Magnesium 1.5 mEq/L = 0.75 mmol/L = 1.82 mg/dL: not low (1.5 read as mg/dL would be).",
        [],
    )
    c.lab("19123-9", "Magnesium", 1.5, "mEq/L")
    c = case(
        f"{k_low}-local-potassium-by-name",
        "Potassium under a local component code named only 'POTASSIUM' (text 'Potassium'), "
        "3.2 mmol/L: read by name, low.",
        ["electrolyte-cramp-cause"],
    )
    c.local_lab("12345", "POTASSIUM", "Potassium", 3.2, "mmol/L", replaces="k")
    c = case(
        f"{k_low}-local-potassium-unit-mg",
        "The only lab: a local 'POTASSIUM' with unit 'mg' (not a potassium unit): not "
        "interpretable, it does not count as a result, so the labs are missing.",
        ["cramp-labs-missing"],
        labs=False,
    )
    c.local_lab("12345", "POTASSIUM", "Potassium", 3.2, "mg", ucum=False)
    c = case(
        "v2-scoping-low-potassium-patient-view",
        "Potassium 3.1 mmol/L at patient-view: electrolyte card.",
        ["electrolyte-cramp-cause"],
    )
    c.lab("2823-3", "Potassium", 3.1, "mmol/L", days_ago=3)
    c = case(
        "v2-scoping-low-potassium-order-sign",
        "The same low potassium at order-sign while a CBC is signed: no card (the electrolyte "
        "card belongs to patient-view and note signing).",
        [],
        hook=sign,
    )
    c.lab("2823-3", "Potassium", 3.1, "mmol/L", days_ago=3)
    c.order(draft_service(c.pid, "cbc", LN, "58410-2", "CBC panel - Blood by Automated count"))

    # --- serious pathology: graded flags, new episode for fracture risk, skin cancer, fever
    osteoporosis = [
        (SN, "64859006", "Osteoporosis"),
        (ICD, "M81.0", "Age-related osteoporosis without current pathological fracture"),
    ]
    for name, lbp_days, expected, says in (
        ("v2-serious-osteoporosis-stable", 730, [], "2 years: not a new episode, no flag"),
        ("v2-serious-osteoporosis-new-episode", 21, ["serious-pathology-red-flag"], "3 weeks"),
    ):
        c = case(
            name,
            f"Woman of 68 with osteoporosis; low back pain began {says}.",
            expected,
            birth="1958-02-11",
        )
        c.problem(LBP, lbp_days)
        c.problem(osteoporosis, 1500)
    c = case(
        "v2-serious-basal-cell-old",
        "Low back pain at 60; basal-cell carcinoma of skin C44.91 and its history Z85.828: "
        "non-melanoma skin cancer is not a cancer flag.",
        [],
        birth="1966-05-01",
    )
    c.problem(LBP, 20)
    c.problem(
        [(ICD, "C44.91", "Basal cell carcinoma of skin, unspecified")],
        1400,
        text="Basal cell carcinoma of skin",
    )
    c.problem([(ICD, "Z85.828", "Personal history of other malignant neoplasm of skin")], 1000)
    c = case(
        "v2-serious-colon-cancer-z85038",
        "Low back pain at 60 with a history of colon cancer Z85.038: cancer flag.",
        ["serious-pathology-red-flag"],
        birth="1966-05-01",
    )
    c.problem(LBP, 20)
    c.problem(
        [(ICD, "Z85.038", "Personal history of other malignant neoplasm of large intestine")],
        1000,
    )
    c = case(
        "v2-serious-colon-cancer-snomed",
        "Low back pain at 60; malignant neoplasm of colon coded SNOMED 363406005 only "
        "(Synthea style): cancer flag.",
        ["serious-pathology-red-flag"],
        birth="1966-05-01",
    )
    c.problem(LBP, 20)
    c.problem([(SN, "363406005", "Malignant neoplasm of colon")], 1100, category=None)
    for days, expected in ((6, ["serious-pathology-red-flag"]), (8, [])):
        c = case(
            f"v2-serious-fever-degf-{days}-days",
            f"Low back pain; oral temperature 100.6 [degF] (38.1 Cel) {days} days ago "
            f"({'inside' if days < 7 else 'outside'} the 7-day window).",
            expected,
        )
        c.problem(LBP, 20)
        t = c.obs(vital(c.pid, f"{c.pid}-t", "8331-1", "Oral temperature", 100.6, "[degF]", days))
        t["valueQuantity"]["unit"] = "°F"
    c = case(
        "v2-serious-opioid-dependence",
        "Low back pain; opioid dependence F11.20 with no injection named: an infection flag "
        "labelled opioid use disorder (catalog v2: F11.* counts; F14/F15 need injection named).",
        ["serious-pathology-red-flag"],
    )
    c.problem(LBP, 20)
    c.problem([(ICD, "F11.20", "Opioid dependence, uncomplicated")], 600)
    c = case(
        "v2-serious-ivdu-text",
        "Low back pain; a Condition named 'IVDU' under a local code: injection drug use "
        "(infection flag) by name.",
        ["serious-pathology-red-flag"],
    )
    c.problem(LBP, 20)
    c.named("IVDU", 600, code="301977")

    # --- imaging stewardship: X-ray, CT and MRI, dated from the current episode
    c = case(
        "v2-imaging-ct-2-weeks",
        "order-sign: lumbar CT (CPT 72131) two weeks into a new low-back-pain episode: warning.",
        ["imaging-stewardship"],
        hook=sign,
    )
    c.problem(LBP, 14)
    c.order(
        draft_service(
            c.pid,
            "ct",
            CPT,
            "72131",
            "Computed tomography, lumbar spine; without contrast material",
        )
    )
    for weeks, expected in ((5, ["imaging-stewardship"]), (7, [])):
        c = case(
            f"v2-imaging-xray-{weeks}-weeks",
            f"order-sign: lumbar X-ray (CPT 72100) {weeks} weeks into a low-back-pain episode "
            f"({'a new episode' if weeks < 6 else 'no longer a new episode'}).",
            expected,
            hook=sign,
        )
        c.problem(LBP, weeks * 7)
        c.order(
            draft_service(
                c.pid,
                "xr",
                CPT,
                "72100",
                "Radiologic examination, spine, lumbosacral; 2 or 3 views",
            )
        )
    mri = (
        CPT,
        "72148",
        "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar; "
        "without contrast material",
    )
    c = case(
        "v2-imaging-mri-new-sciatica-old-back-pain",
        "order-sign: lumbar MRI two weeks after sciatica began, on low back pain of 3 years: "
        "the episode onset is the sciatica's, a new episode: warning.",
        ["imaging-stewardship"],
        hook=sign,
    )
    c.problem(LBP, 1095)
    c.problem(SCIATICA_R, 14)
    c.order(draft_service(c.pid, "mri", *mri))
    c = case(
        "v2-imaging-mri-old-sciatica-new-back-pain",
        "order-sign: lumbar MRI; sciatica of 3 years and a low-back-pain entry of 2 weeks: the "
        "episode onset is the most recent sciatica's (3 years), not a new episode: no card.",
        [],
        hook=sign,
    )
    c.problem(SCIATICA_R, 1095)
    c.problem(LBP, 14)
    c.order(draft_service(c.pid, "mri", *mri))

    # --- comorbidity: pregnancy by observation, O-codes within 300 days, SNOMED hypothyroid
    c = case(
        "v2-comorbidity-pregnancy-status-loinc",
        "Pregnancy status (LOINC 82810-3) answered Pregnant (SNOMED 77386006), a survey "
        "Observation 10 days ago: pregnancy.",
        ["comorbidity-cramp-cause"],
        birth="1994-08-08",
    )
    c.obs(
        answer(
            c.pid,
            f"{c.pid}-preg",
            [(LN, "82810-3", "Pregnancy status")],
            concept((SN, "77386006", "Pregnant")),
            10,
            category="survey",
        )
    )
    c = case(
        "v2-comorbidity-edd-future",
        "Estimated delivery date (LOINC 11778-8) 120 days from now: pregnancy.",
        ["comorbidity-cramp-cause"],
        birth="1994-08-08",
    )
    edd = c.obs(answer(c.pid, f"{c.pid}-edd", [(LN, "11778-8", "Delivery date Estimated")], {}, 30))
    del edd["valueCodeableConcept"]
    edd["valueDateTime"] = (EXAMPLE_NOW + timedelta(days=120)).date().isoformat()
    c = case(
        "v2-comorbidity-hypothyroid-snomed",
        "Idiopathic atrophic hypothyroidism SNOMED 83664006 (a descendant of 40930008, "
        "Synthea style: SNOMED only, encounter diagnosis): hypothyroid.",
        ["comorbidity-cramp-cause"],
    )
    c.problem(
        [(SN, "83664006", "Idiopathic atrophic hypothyroidism")],
        2900,
        category="encounter-diagnosis",
        text="Idiopathic atrophic hypothyroidism",
    )
    c = case(
        "v2-comorbidity-pregnancy-o09",
        "Supervision of elderly multigravida O09.523: pregnancy.",
        ["comorbidity-cramp-cause"],
        birth="1986-01-20",
    )
    c.problem([(ICD, "O09.523", "Supervision of elderly multigravida, third trimester")], 40)
    for days, expected in ((100, ["comorbidity-cramp-cause"]), (310, [])):
        c = case(
            f"v2-comorbidity-o26891-{days}-days",
            f"O26.891 (a pregnancy-related condition) dated {days} days ago: "
            + ("pregnancy (within 300 days)." if days <= 300 else "too old to mean pregnancy now."),
            expected,
            birth="1994-08-08",
        )
        c.problem(
            [(ICD, "O26.891", "Other specified pregnancy related conditions, first trimester")],
            days,
        )

    # --- the trigger: coded negation, text fallback, history
    cramp_code = [(SN, "55300003", "Cramp")]
    for key, value in NEGATIONS.items():
        c = case(
            f"v2-trigger-cramp-finding-{key}",
            f"A cramp symptom Observation 3 days ago answered {value[2]!r} ({value[1]}): "
            "negated, no cramps reported, no cards.",
            [],
            cramps=False,
            labs=False,
        )
        c.obs(answer(c.pid, f"{c.pid}-f", cramp_code, concept(value), 3, category="survey"))
    c = case(
        "v2-trigger-cramp-finding-yes",
        "A cramp symptom Observation answered Yes (373066001) 3 days ago: cramps reported; no "
        "labs, so the labs card.",
        ["cramp-labs-missing"],
        cramps=False,
        labs=False,
    )
    c.obs(
        answer(
            c.pid, f"{c.pid}-f", cramp_code, concept((SN, "373066001", "Yes")), 3, category="survey"
        )
    )
    c = case(
        "v2-trigger-cramps-by-name",
        "Cramps only as a Condition 'Nocturnal leg cramps' under an unknown local code (text "
        "fallback): cramps reported; no labs, so the labs card.",
        ["cramp-labs-missing"],
        cramps=False,
        labs=False,
    )
    c.named("Nocturnal leg cramps", 12, code="118342")
    c = case(
        "v2-trigger-history-of-cramps-by-name",
        "Only a Condition 'History of leg cramps' under an unknown local code: historical, no "
        "trigger, no cards.",
        [],
        cramps=False,
        labs=False,
    )
    c.named("History of leg cramps", 12, code="118343")
    c = case(
        "v2-sciatica-by-name",
        "Cramps coded; sciatica only as 'Sciatica of left side' under an unknown local code "
        "(text fallback): association and management.",
        ["cramp-sciatica-association", "sciatica-management"],
    )
    c.named("Sciatica of left side", 25, code="229011")

    # --- quinine at order-select, the draft's reason being cramps
    c = case(
        "v2-quinine-select-reason-cramps",
        "order-select: quinine selected, its reasonCode nocturnal leg cramps (R25.2 + SNOMED); "
        "nothing else recorded: quinine-caution.",
        ["quinine-caution"],
        hook="order-select",
        cramps=False,
        labs=False,
    )
    q = draft_med(c.pid, "quinine", "quinine sulfate 324 MG Oral Capsule")
    q["medicationCodeableConcept"] = concept(
        (RX, "9071", "quinine"), text="quinine sulfate 324 MG Oral Capsule"
    )
    q["reasonCode"] = [
        concept((SN, "55300003", "Cramp"), (ICD, "R25.2", "Cramp and spasm"), text="Leg cramps")
    ]
    c.order(q)


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
        "Order-sign: a draft lumbar MRI whose reason is cramp (the trigger); no conditions, no "
        "labs. No back-pain episode, so no stewardship card; the labs card belongs to "
        "patient-view and note signing, not to order hooks (v2).",
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
        [],
    )
    pid = "order-select-cramps"
    s[pid] = (
        "Order-select: cramps (undotted M62831, calf spasm) and a selected MRI order; no labs, "
        "no back-pain episode: no card (the labs card is not shown at order hooks, v2).",
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
        [],
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
    for c in cases():
        assert c.name not in s, c.name
        s[c.name] = (c.description, c.build(), c.expected)
    return s


# Card order in an answer: critical, then warning, then info; within one indicator, this order.
RULE_ORDER = [
    "cauda-equina-red-flag",
    "motor-deficit-red-flag",
    "serious-pathology-red-flag",
    "electrolyte-cramp-cause",
    "cramp-labs-missing",
    "medication-cramp-cause",
    "comorbidity-cramp-cause",
    "cramp-sciatica-association",
    "sciatica-management",
    "imaging-stewardship",
    "quinine-caution",
    "nsaid-caution",
]
INDICATOR_ORDER = ["critical", "warning", "info"]
# Each rule's indicator (catalog v2, Rules); a rule whose indicator varies is written
# "rule:indicator" in a case's expected list unless it has the default given here.
INDICATOR = {
    "cauda-equina-red-flag": "critical",
    "motor-deficit-red-flag": "warning",  # critical when bilateral
    "serious-pathology-red-flag": "warning",
    "electrolyte-cramp-cause": "warning",
    "cramp-labs-missing": "info",
    "medication-cramp-cause": "info",
    "comorbidity-cramp-cause": "info",
    "cramp-sciatica-association": "info",  # warning with both supporting features
    "sciatica-management": "info",
    "imaging-stewardship": "warning",
    "quinine-caution": "warning",
    "nsaid-caution": None,  # warning (contraindication) or info (caution): always written
}
RED_FLAGS = {"cauda-equina-red-flag", "motor-deficit-red-flag", "serious-pathology-red-flag"}
ORDER_CHECKS = {"imaging-stewardship", "quinine-caution", "nsaid-caution"}


def expectation(hook: str, entries: list[str]) -> tuple[list[str], list[str]]:
    """The ordered rule ids and their indicators; checks the order and the hook scoping (order
    hooks: red flags and order checks only; order checks only at order hooks)."""
    ids, indicators = [], []
    for entry in entries:
        rule, _, indicator = entry.partition(":")
        indicator = indicator or INDICATOR[rule]
        assert indicator in INDICATOR_ORDER, entry
        ids.append(rule)
        indicators.append(indicator)
    keys = [
        (INDICATOR_ORDER.index(i), RULE_ORDER.index(r))
        for r, i in zip(ids, indicators, strict=True)
    ]
    assert keys == sorted(keys) and len(set(ids)) == len(ids), entries
    allowed = (
        RED_FLAGS | ORDER_CHECKS
        if hook in {"order-select", "order-sign"}
        else (set(RULE_ORDER) - ORDER_CHECKS)
    )
    assert set(ids) <= allowed, (hook, entries)
    return ids, indicators


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for name, (description, body, entries) in scenarios().items():
        rule_ids, indicators = expectation(body["hook"], entries)
        (OUT / f"{name}.request.json").write_text(json.dumps(body, indent=2) + "\n")
        expected = {
            "description": description,
            "service": SERVICE[body["hook"]],
            "now": EXAMPLE_NOW.isoformat() + "Z",
            "rule_ids": rule_ids,
            "indicators": indicators,
        }
        (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(scenarios())} scenarios to {OUT}")


if __name__ == "__main__":
    main()
