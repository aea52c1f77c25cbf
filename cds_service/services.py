"""The registry of CDS services this product offers: one per hook, with prefetch templates."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnknownService

NOTE_SIGN_HOOK = "dev.crampcds.note-sign"


@dataclass(frozen=True)
class PrefetchQuery:
    """One prefetch template and what the service does when it cannot be had."""

    template: str
    # A required query that can be had neither from prefetch nor from the FHIR server ends the
    # request with 412. An optional one is left out and the gap is named in the card detail.
    required: bool = True


# Everything the rules read: the Patient, Conditions of every category, the Observation
# categories where labs, vitals and symptom findings live, medication orders and allergies.
PREFETCH: dict[str, PrefetchQuery] = {
    "patient": PrefetchQuery("Patient/{{context.patientId}}"),
    "conditions": PrefetchQuery("Condition?patient={{context.patientId}}"),
    "observations": PrefetchQuery(
        "Observation?patient={{context.patientId}}&category=laboratory,vital-signs,exam,survey"
    ),
    "medications": PrefetchQuery("MedicationRequest?patient={{context.patientId}}", required=False),
    # Optional like medications: without them no NSAID is suggested and the cards say why.
    "allergies": PrefetchQuery("AllergyIntolerance?patient={{context.patientId}}", required=False),
}


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    context_schema: str
    prefetch: dict[str, PrefetchQuery] = field(default_factory=lambda: dict(PREFETCH))

    def discovery_entry(self) -> dict:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {key: query.template for key, query in self.prefetch.items()},
        }


SERVICES: tuple[Service, ...] = (
    Service(
        id="cramp-sciatica-patient-view",
        hook="patient-view",
        title="Muscle cramps and sciatica",
        description=(
            "For a patient who reports muscle cramps: whether sciatica may contribute, red flags "
            "that need urgent care (cauda equina syndrome, motor deficit, serious pathology), and "
            "other causes (electrolytes, drugs, comorbidities)."
        ),
        context_schema="context-patient-view",
    ),
    Service(
        id="cramp-sciatica-order-select",
        hook="order-select",
        title="Cramp and sciatica order check (selection)",
        description=(
            "Checks selected orders for a patient with muscle cramps: early lumbar imaging "
            "without red flags, quinine for cramps, NSAIDs where contraindicated; plus the "
            "patient's red flags and other cramp causes."
        ),
        context_schema="context-order-select",
    ),
    Service(
        id="cramp-sciatica-order-sign",
        hook="order-sign",
        title="Cramp and sciatica order check (signing)",
        description=(
            "Checks every draft order at signing for a patient with muscle cramps: early lumbar "
            "imaging without red flags, quinine for cramps, NSAIDs where contraindicated; plus "
            "the patient's red flags and other cramp causes."
        ),
        context_schema="context-order-sign",
    ),
    Service(
        id="cramp-sciatica-note-sign",
        hook=NOTE_SIGN_HOOK,
        title="Cramp and sciatica note check",
        description=(
            "At note signing, reads the draft note together with coded data for reported muscle "
            "cramps and sciatica red flags. Context: userId, patientId, optional encounterId, "
            "note (a DocumentReference with text/plain base64 content)."
        ),
        context_schema="context-note-sign",
    ),
)

_BY_ID = {service.id: service for service in SERVICES}


def find_service(service_id: str) -> Service:
    try:
        return _BY_ID[service_id]
    except KeyError:
        raise UnknownService(f"No CDS service with id '{service_id}'", "id") from None
