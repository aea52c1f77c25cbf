"""The chart: one read-only view of the patient, built from the gathered raw JSON.

Rules read only the chart. It knows which conditions and observations count (status filters),
their dates, the latest readable result per lab in canonical units, draft orders and "now".
Anything it cannot interpret is kept in `unreadable` so cards can say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from . import fhirdates
from .gather import Gathered
from .labs import Lab
from .terminology import Coding, Terminology, ValueSet

COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
COUNTING_OBSERVATION = {"final", "amended", "corrected", "preliminary"}


@dataclass(frozen=True)
class Fact:
    """A Condition or Observation that counts, reduced to what rules and cards need."""

    reference: str  # e.g. Condition/123
    code: dict  # the raw CodeableConcept
    when: datetime | None
    resource: dict = field(repr=False, compare=False)

    def label(self) -> str:
        text = self.code.get("text") if isinstance(self.code, dict) else None
        if isinstance(text, str) and text:
            return text
        for coding in self.code.get("coding") or [] if isinstance(self.code, dict) else []:
            if isinstance(coding, dict) and coding.get("display"):
                return str(coding["display"])
        return self.reference


@dataclass(frozen=True)
class Match:
    """A fact and the coding that put it in a concept group: the evidence a card lists."""

    fact: Fact
    coding: Coding


@dataclass(frozen=True)
class LabResult:
    lab: Lab
    fact: Fact
    value: float  # in lab.unit
    original: str  # the value as recorded, with its unit


@dataclass(frozen=True)
class Chart:
    hook: str
    now: datetime
    patient_id: str
    birth_date: date | None
    sex: str | None
    conditions: tuple[Fact, ...]
    observations: tuple[Fact, ...]
    draft_orders: tuple[dict, ...]
    selections: tuple[str, ...]
    gaps: tuple[str, ...]
    unreadable: tuple[str, ...]
    terminology: Terminology = field(repr=False)

    @property
    def patient_reference(self) -> str:
        return f"Patient/{self.patient_id}"

    def value_set(self, name: str) -> ValueSet:
        return self.terminology[name]

    def conditions_in(self, group: str, within_days: int | None = None) -> list[Match]:
        return list(self._matching(self.conditions, group, within_days))

    def observations_in(self, group: str, within_days: int | None = None) -> list[Match]:
        return list(self._matching(self.observations, group, within_days))

    def _matching(self, facts, group: str, within_days: int | None) -> Iterator[Match]:
        value_set = self.terminology[group]
        since = self.now - timedelta(days=within_days) if within_days is not None else None
        for fact in facts:
            coding = value_set.match(fact.code)
            if coding is None:
                continue
            if since is not None and (fact.when is None or fact.when < since):
                continue
            yield Match(fact, coding)

    def latest_result(self, lab: Lab) -> tuple[LabResult | None, list[str]]:
        """The newest readable result within the lab's lookback, and what could not be read."""
        since = self.now - timedelta(days=lab.lookback_days)
        unreadable: list[str] = []
        best: LabResult | None = None
        for match in self.observations_in(lab.value_set, lab.lookback_days):
            fact = match.fact
            if fact.when is None or fact.when < since or fact.when > self.now + timedelta(days=1):
                continue
            result = _lab_value(lab, fact)
            if isinstance(result, str):
                unreadable.append(result)
            elif best is None or fact.when > best.fact.when:
                best = result
        return best, unreadable


def _lab_value(lab: Lab, fact: Fact) -> LabResult | str:
    quantity = fact.resource.get("valueQuantity")
    if not isinstance(quantity, dict):
        return f"{fact.reference}: {lab.name} has no numeric value"
    value, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"{fact.reference}: {lab.name} value is not a number"
    if not isinstance(unit, str) or not unit:
        return f"{fact.reference}: {lab.name} {value} has no unit"
    converted = lab.to_canonical(float(value), unit)
    if converted is None:
        return f"{fact.reference}: {lab.name} {value} {unit} (unit not interpretable)"
    return LabResult(lab, fact, converted, f"{value:g} {unit}")


def build_chart(
    hook: str,
    context: dict,
    gathered: Gathered,
    terminology: Terminology,
    now: datetime,
) -> Chart:
    patient_id = str(context["patientId"])
    patient = next(
        (p for p in gathered.of_type("Patient") if p.get("id") == patient_id),
        None,
    )
    unreadable: list[str] = []
    conditions = tuple(_conditions(gathered.of_type("Condition"), patient_id, unreadable))
    observations = tuple(_observations(gathered.of_type("Observation"), patient_id, unreadable))
    draft_orders = tuple(
        entry["resource"]
        for entry in (context.get("draftOrders") or {}).get("entry") or []
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
    )
    gaps = list(gathered.gaps)
    if patient is None:
        gaps.append(f"Patient/{patient_id} was not available")
    return Chart(
        hook=hook,
        now=now,
        patient_id=patient_id,
        birth_date=fhirdates.parse_date((patient or {}).get("birthDate")),
        sex=(patient or {}).get("gender")
        if isinstance((patient or {}).get("gender"), str)
        else None,
        conditions=conditions,
        observations=observations,
        draft_orders=draft_orders,
        selections=tuple(context.get("selections") or ()),
        gaps=tuple(gaps),
        unreadable=tuple(unreadable),
        terminology=terminology,
    )


def _about_patient(resource: dict, patient_id: str) -> bool:
    """Resources about another patient are never used (a safety net against mixed-up data)."""
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"].rsplit("/", 1)[-1] == patient_id
    return True


def _status(concept: object) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def _conditions(resources: list[dict], patient_id: str, unreadable: list[str]) -> Iterator[Fact]:
    for resource in resources:
        if not _about_patient(resource, patient_id):
            continue
        reference = f"Condition/{resource.get('id', '?')}"
        clinical = _status(resource.get("clinicalStatus"))
        if clinical is not None and clinical not in COUNTING_CLINICAL:
            continue
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(f"{reference}: no code")
            continue
        when = _first_date(resource, ("onsetDateTime", "onsetPeriod", "recordedDate"))
        yield Fact(reference, code, when, resource)


def _observations(resources: list[dict], patient_id: str, unreadable: list[str]) -> Iterator[Fact]:
    for resource in resources:
        if not _about_patient(resource, patient_id):
            continue
        if resource.get("status") not in COUNTING_OBSERVATION:
            continue
        reference = f"Observation/{resource.get('id', '?')}"
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(f"{reference}: no code")
            continue
        when = _first_date(
            resource, ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")
        )
        yield Fact(reference, code, when, resource)


def _first_date(resource: dict, fields: tuple[str, ...]) -> datetime | None:
    for name in fields:
        value = resource.get(name)
        if isinstance(value, dict):  # a Period: its start
            value = value.get("start")
        moment = fhirdates.parse(value)
        if moment is not None:
            return moment
    return None
