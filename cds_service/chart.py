"""The chart: one read-only view of the patient, built from the gathered raw JSON.

Rules read only the chart. It knows which conditions and observations count (status filters),
their dates, lab results in canonical units and how to classify them, active medications,
draft orders, the note text and "now". What it cannot interpret is kept in `unreadable` so
cards can say so instead of silently using or dropping it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property

from . import fhirdates, notes
from .fhircheck import fhir_problem
from .gather import Gathered
from .labs import Lab
from .notes import NoteFinding
from .services import NOTE_SIGN_HOOK
from .terminology import Coding, Terminology, ValueSet, codings_of, concept_text, normalise

log = logging.getLogger(__name__)
Posting = tuple[int, int, Coding]  # (fact position, coding position, coding)
COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
COUNTING_OBSERVATION = {"final", "amended", "corrected", "preliminary"}
COUNTING_MEDICATION = {"active", "on-hold", "draft"}
CONDITION_DATES = ("onsetDateTime", "onsetPeriod", "recordedDate")
OBSERVATION_DATES = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")
LOW_INTERPRETATION = {"L", "LL"}
HIGH_INTERPRETATION = {"H", "HH"}
DECIDING_INTERPRETATION = LOW_INTERPRETATION | HIGH_INTERPRETATION | {"N"}
ABSENT_CODES = {"260413007", "absent", "N", "no", "373067005"}  # SNOMED None / No
CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
# Note findings the rules may use: current ones; uncertain ones (supporting evidence only); and
# historical ones, which only the back-pain condition of the cauda equina rule reads.
USED_NOTE_STATUSES = ("affirmed", "possible", "historical")
LOCATED_SITES = {"calf", "hamstring", "thigh", "foot", "leg", "back", "buttock"}
# Characters of quoted note text that markdown would read as formatting, links or HTML.
MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~"})


def label_of(concept: object, fallback: str) -> str:
    text = concept_text(concept)
    if text:
        return text
    for coding in codings_of(concept):
        if coding.display:
            return coding.display
    return fallback


@dataclass(frozen=True)
class Fact:
    """A Condition or Observation that counts, reduced to what rules and cards need."""

    reference: str  # e.g. Condition/123
    code: dict  # the raw CodeableConcept
    date_fields: tuple[str, ...] = field(repr=False, compare=False)
    resource: dict = field(repr=False, compare=False)

    @cached_property
    def when(self) -> datetime | None:
        """The first readable of the date fields (parsed when a rule first asks: a record of
        thousands pays only for the facts rules look at)."""
        return _first_date(self.resource, self.date_fields)

    def label(self) -> str:
        return label_of(self.code, self.reference)

    @cached_property
    def words(self) -> str:
        """The concept's text and displays in lower case, one per line: what name matches read."""
        texts = [concept_text(self.code)] + [c.display for c in codings_of(self.code)]
        return "\n".join(t.lower() for t in texts if t)

    @property
    def side(self) -> str | None:
        """The side the draft note names for a note finding; coded facts carry theirs in
        their codes (e.g. M21.371), so None."""
        return None

    @property
    def body_sites(self) -> list[dict]:
        sites = self.resource.get("bodySite")
        if isinstance(sites, dict):  # Observation.bodySite is a single CodeableConcept
            sites = [sites]
        return [s for s in sites or [] if isinstance(s, dict)]

    @property
    def day(self) -> str | None:
        return self.when.date().isoformat() if self.when else None


@dataclass(frozen=True)
class NoteFact(Fact):
    """A finding read from the draft note's text, standing for the Condition it would be
    coded as (the resource: provisional, dated today), so that rules use it like a coded one."""

    finding: NoteFinding | None = field(default=None, compare=False)
    quote: str = ""  # at most notes.QUOTE_LIMIT characters of the note, never more
    groups: tuple[str, ...] = ()  # the catalog concept groups it counts in
    coded: bool = False  # the record already codes this concept

    @property
    def status(self) -> str:
        return self.finding.status if self.finding else "affirmed"

    @property
    def side(self) -> str | None:
        return self.finding.side if self.finding else None

    def label(self) -> str:
        where = {
            "possible": "uncertain in the draft note",
            "historical": "past history in the draft note",
        }.get(
            self.status, "in the draft note" if self.coded else "in the draft note, not yet coded"
        )
        return f"{where}: “{self.quote.translate(MARKDOWN_SPECIAL)}”"

    @property
    def offered(self) -> bool:
        """Whether a card may offer to add it to the problem list: current, not yet coded, and
        with a catalog code."""
        has_code = next(codings_of(self.code), None) is not None
        return self.status == "affirmed" and not self.coded and has_code


@dataclass(frozen=True)
class Match:
    """A fact and the coding (or name) that put it in a concept group: a card's evidence."""

    fact: Fact
    coding: Coding

    @property
    def code(self) -> str:
        return f"{self.coding.system}|{self.coding.code}" if self.coding.system else ""


@dataclass(frozen=True)
class LabResult:
    lab: Lab
    fact: Fact
    value: float  # in lab.unit
    original: str  # the value as recorded, with its unit
    interpretation: str | None  # N, L, LL, H or HH when the Observation says so
    range_low: float | None  # reference range, in lab.unit
    range_high: float | None

    def is_low(self) -> bool:
        """Interpretation decides, else the reference range, else the catalog's threshold."""
        if self.interpretation in DECIDING_INTERPRETATION:
            return self.interpretation in LOW_INTERPRETATION
        if self.range_low is not None:
            return self.value < self.range_low
        return self.lab.low_below is not None and self.value < self.lab.low_below

    def is_high(self) -> bool:
        if self.interpretation in DECIDING_INTERPRETATION:
            return self.interpretation in HIGH_INTERPRETATION
        if self.range_high is not None:
            return self.value > self.range_high
        return self.lab.high_above is not None and self.value > self.lab.high_above

    def shown(self) -> str:
        text = f"{self.value:.4g} {self.lab.unit}"
        return text if self.original.endswith(f" {self.lab.unit}") else f"{text} ({self.original})"


@dataclass(frozen=True)
class Medication:
    """An active, on-hold or draft MedicationRequest, with the concept naming its drug."""

    reference: str
    concept: dict
    when: datetime | None
    resource: dict = field(default_factory=dict, repr=False, compare=False)

    def label(self) -> str:
        return label_of(self.concept, self.reference)


@dataclass(frozen=True)
class Order:
    """A draft order from `context.draftOrders`, with the concept of what is ordered."""

    reference: str
    resource: dict = field(repr=False, compare=False)
    concept: dict = field(default_factory=dict)

    def label(self) -> str:
        return label_of(self.concept, self.reference)


@dataclass(frozen=True)
class Chart:
    hook: str
    now: datetime
    patient_id: str
    birth_date: date | None
    sex: str | None
    conditions: tuple[Fact, ...]  # those that count: active, recurrence, relapse, or no status
    past_conditions: tuple[Fact, ...]  # inactive, remission or resolved (not refuted)
    observations: tuple[Fact, ...]
    medications: tuple[Medication, ...]
    draft_orders: tuple[Order, ...]
    selections: tuple[str, ...]
    note_text: str
    gaps: tuple[str, ...]
    read_errors: tuple[str, ...]
    terminology: Terminology = field(repr=False)
    # What the draft note's text says (note-sign only), every mention with its status.
    note_findings: tuple[NoteFinding, ...] = ()
    note_reference: str = "draft note"
    # Resources checked against FHIR R4B when a rule first uses one: reference -> problem.
    _checked: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)
    # Per list of facts: (system, normalised code) -> positions of the facts that carry it.
    _indexes: dict[int, dict[tuple[str, str], list[int]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # Per (list of facts, concept group): the facts coded in it, with the matching coding.
    _hits: dict[tuple[int, str], list[tuple[Fact, Coding]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def unreadable(self) -> tuple[str, ...]:
        """Everything that could not be interpreted: named in the card detail, never used."""
        rejected = (problem for problem in self._checked.values() if problem)
        return self.read_errors + tuple(rejected)

    def interpretable(self, reference: str, resource: dict) -> bool:
        """Whether a resource a rule is about to use is valid FHIR R4B (checked once, lazily,
        so that a record of thousands of resources pays only for those the rules touch)."""
        if reference not in self._checked:
            self._checked[reference] = fhir_problem(reference, resource)
        return self._checked[reference] is None

    @property
    def patient_reference(self) -> str:
        return f"Patient/{self.patient_id}"

    @property
    def age(self) -> int | None:
        if self.birth_date is None:
            return None
        today = self.now.date()
        before_birthday = (today.month, today.day) < (self.birth_date.month, self.birth_date.day)
        return today.year - self.birth_date.year - before_birthday

    def value_set(self, name: str) -> ValueSet:
        return self.terminology[name]

    def since(self, days: int) -> datetime:
        return self.now - timedelta(days=days)

    def conditions_in(self, group: str, within_days: int | None = None) -> list[Match]:
        return list(self._matching(self.conditions, group, within_days))

    def past_conditions_in(self, group: str, within_days: int | None = None) -> list[Match]:
        return list(self._matching(self.past_conditions, group, within_days))

    def observations_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """Observations coded in the group, not negated (a finding recorded as absent)."""
        return [
            m
            for m in self._matching(self.observations, group, within_days)
            if not is_negated(m.fact.resource)
        ]

    def findings_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """A symptom or problem, whether coded as a Condition or as an Observation finding, or
        written in the draft note as current (dated now)."""
        return (
            self.conditions_in(group, within_days)
            + self.observations_in(group, within_days)
            + self.noted_in(group)
        )

    def problems_in(self, group: str) -> list[Match]:
        """A problem that counts: an active Condition, or current in the draft note."""
        return self.conditions_in(group) + self.noted_in(group)

    def noted_in(self, group: str, *statuses: str) -> list[Match]:
        """Findings of the group read from the draft note, with one of the statuses (default:
        current, "affirmed"; "possible" ones are supporting evidence only). Dated now."""
        wanted = statuses or ("affirmed",)
        value_set = self.terminology.value_sets.get(group)
        found = []
        for fact in self.note_facts:
            if group in fact.groups and fact.status in wanted:
                coding = value_set.match(fact.code) if value_set else None
                coding = coding or next(codings_of(fact.code), None) or Coding("", "")
                found.append(Match(fact, coding))
        return found

    def note_fact(self, reference: str | None) -> NoteFact | None:
        return self._note_facts_by_reference.get(reference) if reference else None

    @cached_property
    def _note_facts_by_reference(self) -> dict[str, NoteFact]:
        return {fact.reference: fact for fact in self.note_facts}

    @cached_property
    def note_facts(self) -> tuple[NoteFact, ...]:
        """One fact per concept, status and side the note mentions (its first mention, or the
        first that names a body site), for the statuses rules read."""
        if not self.note_findings:
            return ()
        lexicon = notes.lexicon()
        chosen: dict[tuple, NoteFinding] = {}
        for finding in self.note_findings:
            if finding.status not in USED_NOTE_STATUSES:
                continue
            key = (finding.concept, finding.status, finding.side)
            if key not in chosen or (chosen[key].site is None and finding.site is not None):
                chosen[key] = finding
        facts, references = [], set()
        for finding in sorted(chosen.values(), key=lambda f: f.start):
            concept = lexicon.concepts[finding.concept]
            reference = f"{self.note_reference}, characters {finding.start}-{finding.end}"
            if reference in references:
                reference += f" ({concept.label.lower()})"
            references.add(reference)
            code, quote = _located(finding, concept.label), finding.quote(self.note_text)
            facts.append(
                NoteFact(
                    reference,
                    code,
                    ("recordedDate",),
                    self._note_condition(finding, concept, code, quote),
                    finding=finding,
                    quote=quote,
                    groups=concept.groups,
                    coded=self._coded(finding.concept),
                )
            )
        return tuple(facts)

    def _coded(self, group: str) -> bool:
        if group not in self.terminology.value_sets:
            return False
        return bool(self.conditions_in(group) or self.observations_in(group))

    def _note_condition(
        self, finding: NoteFinding, concept: notes.Concept, code: dict, quote: str
    ) -> dict:
        """The Condition a note finding would be added to the problem list as."""
        condition = {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": CLINICAL_SYSTEM, "code": "active"}]},
            "verificationStatus": {
                "coding": [{"system": VERIFICATION_SYSTEM, "code": "provisional"}]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": CATEGORY_SYSTEM,
                            "code": "problem-list-item",
                            "display": "Problem List Item",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": {"reference": self.patient_reference},
            "recordedDate": self.now.date().isoformat(),
            "note": [{"text": f"Read from the draft note at signing: “{quote}”"}],
        }
        if concept.body_site:
            condition["bodySite"] = [concept.body_site]
        elif finding.site in LOCATED_SITES:
            condition["bodySite"] = [{"text": " ".join(filter(None, (finding.side, finding.site)))}]
        return condition

    def _index(self, facts: tuple[Fact, ...]) -> dict[tuple[str, str], list[Posting]]:
        """(system, normalised code) -> where it is coded: (fact position, coding position,
        coding), built once per list of facts."""
        index = self._indexes.get(id(facts))
        if index is None:
            index = {}
            for position, fact in enumerate(facts):
                for rank, coding in enumerate(codings_of(fact.code)):
                    key = (coding.system, normalise(coding.system, coding.code))
                    index.setdefault(key, []).append((position, rank, coding))
            self._indexes[id(facts)] = index
        return index

    def _matching(self, facts: tuple[Fact, ...], group: str, within: int | None) -> Iterator[Match]:
        """Facts coded in the group, in record order. An index of the record's codes means a
        lookup costs the number of distinct codes, not the number of resources."""
        since = self.since(within) if within is not None else None
        for fact, coding in self._coded_in(facts, group):
            if since is not None and fact.when is None:
                self._checked.setdefault(
                    f"{fact.reference}#date",
                    f"{fact.reference}: no readable date (not interpretable)",
                )
                continue
            if since is not None and fact.when < since:
                continue
            if self.interpretable(fact.reference, fact.resource):
                yield Match(fact, coding)

    def _coded_in(self, facts: tuple[Fact, ...], group: str) -> list[tuple[Fact, Coding]]:
        """The facts coded in the group, each with its first coding that is (as ValueSet.match
        would answer), found through the index: a lookup per listed code, and a look at each
        distinct code of the record only for groups with prefix entries."""
        hits = self._hits.get((id(facts), group))
        if hits is None:
            value_set = self.terminology[group]
            index = self._index(facts)
            postings: list[Posting] = []
            if len(value_set.exact) < len(index):  # walk the smaller side: groups list
                for key in value_set.exact:  # tens to hundreds of codes, records one to
                    postings += index.get(key, ())  # thousands of distinct ones
            else:
                for key, found in index.items():
                    if key in value_set.exact:
                        postings += found
            for key, word in value_set.unverified.items():
                postings += [
                    p
                    for p in index.get(key, ())
                    if word in p[2].display.lower()
                    or word in concept_text(facts[p[0]].code).lower()
                ]
            if value_set.prefixes:
                listed = value_set.keys
                for key, found in index.items():
                    if key not in listed and value_set.could_match(key):
                        postings += found
            first: dict[int, tuple[int, Coding]] = {}
            for position, rank, coding in postings:
                if position not in first or rank < first[position][0]:
                    first[position] = (rank, coding)
            hits = [(facts[position], first[position][1]) for position in sorted(first)]
            self._hits[(id(facts), group)] = hits
        return hits

    def results(self, lab: Lab) -> tuple[list[LabResult], list[str]]:
        """Readable results within the lab's lookback, newest first; and what was unreadable."""
        latest_allowed = self.now + timedelta(days=1)
        readable: list[LabResult] = []
        unreadable: list[str] = []
        for match in self._matching(self.observations, lab.value_set, lab.lookback_days):
            fact = match.fact
            if fact.when > latest_allowed:
                continue
            result = _lab_value(lab, fact)
            if isinstance(result, str):
                unreadable.append(result)
            else:
                readable.append(result)
        readable.sort(key=lambda r: r.fact.when, reverse=True)
        return readable, unreadable

    def latest_result(self, lab: Lab) -> tuple[LabResult | None, list[str]]:
        readable, unreadable = self.results(lab)
        return (readable[0] if readable else None), unreadable

    def medications_in(self, group: str) -> list[tuple[Medication, str]]:
        """Active medications in the group, each with the code or name that matched."""
        value_set = self.terminology[group]
        matched = ((m, value_set.identify(m.concept)) for m in self.medications)
        return [
            (medication, how)
            for medication, how in matched
            if how is not None and self.interpretable(medication.reference, medication.resource)
        ]

    @property
    def orders_to_check(self) -> tuple[Order, ...]:
        """The orders named in `selections` at order-select, every draft order at order-sign."""
        if self.hook == "order-select":
            return tuple(o for o in self.draft_orders if o.reference in set(self.selections))
        if self.hook == "order-sign":
            return self.draft_orders
        return ()


def is_negated(observation: dict) -> bool:
    """A symptom Observation that records the finding as absent (valueBoolean false, "absent")."""
    if observation.get("valueBoolean") is False:
        return True
    value = observation.get("valueCodeableConcept")
    if isinstance(value, dict):
        if concept_text(value).strip().lower() in {"absent", "no", "none", "negative"}:
            return True
        return any(
            c.code in ABSENT_CODES or c.display.lower() in {"absent", "no", "none"}
            for c in codings_of(value)
        )
    return False


def _lab_value(lab: Lab, fact: Fact) -> LabResult | str:
    quantity = fact.resource.get("valueQuantity")
    if not isinstance(quantity, dict):
        return f"{fact.reference}: {lab.name} has no numeric value (not interpretable)"
    value, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    number = _finite(value)
    if number is None:
        return f"{fact.reference}: {lab.name} value is not a finite number (not interpretable)"
    if not isinstance(unit, str) or not unit:
        return f"{fact.reference}: {lab.name} {value} has no unit (not interpretable)"
    converted = lab.to_canonical(number, unit)
    if converted is None:
        return f"{fact.reference}: {lab.name} {value} {unit}: unit not interpretable"
    low, high = _reference_range(lab, fact.resource)
    return LabResult(
        lab, fact, converted, f"{value:g} {unit}", _interpretation(fact.resource), low, high
    )


def _interpretation(resource: dict) -> str | None:
    for concept in resource.get("interpretation") or []:
        for coding in codings_of(concept):
            if coding.code in DECIDING_INTERPRETATION:
                return coding.code
    return None


def _reference_range(lab: Lab, resource: dict) -> tuple[float | None, float | None]:
    for entry in resource.get("referenceRange") or []:
        if isinstance(entry, dict):
            return _bound(lab, entry.get("low")), _bound(lab, entry.get("high"))
    return None, None


def _bound(lab: Lab, quantity: object) -> float | None:
    if not isinstance(quantity, dict):
        return None
    value, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    number = _finite(value)
    if number is None or not isinstance(unit, str):
        return None
    return lab.to_canonical(number, unit)


def _finite(value: object) -> float | None:
    """A JSON number as a float, or None for a non-number, a boolean, NaN, an infinity, or an
    integer too large for a float (all valid JSON, none a lab result)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def build_chart(
    hook: str,
    context: dict,
    gathered: Gathered,
    terminology: Terminology,
    now: datetime,
) -> Chart:
    patient_id = str(context["patientId"])
    patient = next((p for p in gathered.of_type("Patient") if p.get("id") == patient_id), None)
    unreadable: list[str] = []
    mine = {
        kind: _about(gathered.of_type(kind), patient_id, kind, unreadable)
        for kind in ("Condition", "Observation", "MedicationRequest")
    }
    conditions, past_conditions = [], []
    for fact, counts in _conditions(mine["Condition"], unreadable):
        (conditions if counts else past_conditions).append(fact)
    gaps = list(gathered.gaps)
    if patient is None:
        gaps.append(f"Patient/{patient_id} was not available (age and sex unknown)")
    patient = patient or {}
    medications_by_id = {
        m.get("id"): m for m in gathered.of_type("Medication") if isinstance(m.get("id"), str)
    }
    gender = patient.get("gender")
    note = context.get("note")
    note_text = _note_text(note, unreadable)
    note_findings: tuple[NoteFinding, ...] = ()
    if hook == NOTE_SIGN_HOOK and note_text:
        if len(note_text) > notes.MAX_NOTE_CHARS:
            unreadable.append(
                f"the draft note is longer than {notes.MAX_NOTE_CHARS} characters: "
                "only its beginning was read"
            )
        try:
            note_findings = notes.read_note(note_text)
        except Exception as error:  # a defect of the reader must not cost the coded data's cards
            log.error("the note reader failed: %s (note text not logged)", type(error).__name__)
            unreadable.append("the draft note's text could not be read (not interpretable)")
    note_id = note.get("id") if isinstance(note, dict) else None
    return Chart(
        hook=hook,
        now=now,
        patient_id=patient_id,
        birth_date=fhirdates.parse_date(patient.get("birthDate")),
        sex=gender if isinstance(gender, str) else None,
        conditions=tuple(conditions),
        past_conditions=tuple(past_conditions),
        observations=tuple(_observations(mine["Observation"], unreadable)),
        medications=tuple(_medications(mine["MedicationRequest"], medications_by_id)),
        draft_orders=tuple(_orders(context.get("draftOrders"))),
        selections=tuple(s for s in context.get("selections") or () if isinstance(s, str)),
        note_text=note_text,
        gaps=tuple(gaps),
        read_errors=tuple(unreadable),
        terminology=terminology,
        note_findings=note_findings,
        note_reference=f"DocumentReference/{note_id}" if isinstance(note_id, str) else "draft note",
    )


def _about(resources: list[dict], patient_id: str, kind: str, unreadable: list[str]) -> list[dict]:
    """The resources about this patient; how many name another one goes in the card detail."""
    mine = [r for r in resources if _about_patient(r, patient_id)]
    if len(mine) < len(resources):
        others = len(resources) - len(mine)
        unreadable.append(f"{others} {kind} resource(s) name another patient as subject: not used")
    return mine


def _about_patient(resource: dict, patient_id: str) -> bool:
    """Resources about another patient are never used (a safety net against mixed-up data)."""
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return referenced_id(ref["reference"]) == patient_id
    return True


def referenced_id(reference: str) -> str:
    """The id in `Patient/1`, `https://ehr/fhir/Patient/1` or `Patient/1/_history/3`."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1]


def _status(concept: object) -> str | None:
    for coding in codings_of(concept):
        return coding.code
    if isinstance(concept, dict):  # codings without a system still carry the status code
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return coding["code"]
    return None


def _reference(resource: dict) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid if isinstance(rid, str) else '?'}"


def _conditions(resources: list[dict], unreadable: list[str]) -> Iterator[tuple[Fact, bool]]:
    """Each Condition not refuted or entered in error, and whether it counts as current."""
    for resource in resources:
        clinical = _status(resource.get("clinicalStatus"))
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        reference = _reference(resource)
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(f"{reference}: no code (not interpretable)")
            continue
        fact = Fact(reference, code, CONDITION_DATES, resource)
        yield fact, clinical in COUNTING_CLINICAL | {None}


def _observations(resources: list[dict], unreadable: list[str]) -> Iterator[Fact]:
    for resource in resources:
        status = resource.get("status")
        if not isinstance(status, str):  # a list or object: unhashable, and no status at all
            unreadable.append(f"{_reference(resource)}: status is not a code (not interpretable)")
            continue
        if status not in COUNTING_OBSERVATION:
            continue
        reference = _reference(resource)
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(f"{reference}: no code (not interpretable)")
            continue
        yield Fact(reference, code, OBSERVATION_DATES, resource)


def _medications(resources: list[dict], medications_by_id: dict[str, dict]) -> Iterator[Medication]:
    for resource in resources:
        status = resource.get("status")
        if not isinstance(status, str) or status not in COUNTING_MEDICATION:
            continue
        yield Medication(
            _reference(resource),
            medication_concept(resource, medications_by_id),
            fhirdates.parse(resource.get("authoredOn")),
            resource,
        )


def medication_concept(request: dict, medications_by_id: dict[str, dict] | None = None) -> dict:
    """The drug of a MedicationRequest: its CodeableConcept, or the referenced Medication's."""
    concept = request.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return concept
    reference = request.get("medicationReference")
    if not isinstance(reference, dict):
        return {}
    target = reference.get("reference")
    medication = None
    if isinstance(target, str) and target.startswith("#"):
        medication = next(
            (
                c
                for c in request.get("contained") or []
                if isinstance(c, dict) and c.get("id") == target[1:]
            ),
            None,
        )
    elif isinstance(target, str) and medications_by_id:
        medication = medications_by_id.get(target.rsplit("/", 1)[-1])
    if isinstance(medication, dict) and isinstance(medication.get("code"), dict):
        return medication["code"]
    display = reference.get("display")
    return {"text": display} if isinstance(display, str) else {}


def _orders(bundle: object) -> Iterator[Order]:
    if not isinstance(bundle, dict):
        return
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "MedicationRequest":
            concept = medication_concept(resource)
        else:
            concept = resource.get("code") if isinstance(resource.get("code"), dict) else {}
        yield Order(_reference(resource), resource, concept)


def _note_text(note: object, unreadable: list[str]) -> str:
    if not isinstance(note, dict):
        return ""
    contents = note.get("content")
    parts = []
    for content in contents if isinstance(contents, list) else []:
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
            continue
        if not str(attachment.get("contentType", "")).startswith("text/plain"):
            continue
        try:
            parts.append(base64.b64decode(attachment["data"], validate=False).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            unreadable.append("the draft note's text could not be decoded (not interpretable)")
    return "\n".join(parts)


def _located(finding: NoteFinding, label: str) -> dict:
    """The finding's CodeableConcept, its text naming the side and site when the note does."""
    code = dict(finding.code)
    text = code.get("text") or label
    site = finding.site if finding.site and finding.site not in text.lower() else None
    where = " ".join(filter(None, (finding.side, site)))
    if finding.site in LOCATED_SITES and where:
        text = f"{text} ({where})"
    elif finding.side in {"left", "right", "bilateral"}:
        text = f"{text} ({finding.side})"
    code["text"] = text
    return code


def _first_date(resource: dict, fields: tuple[str, ...]) -> datetime | None:
    for name in fields:
        value = resource.get(name)
        if isinstance(value, dict):  # a Period: its start
            value = value.get("start")
        moment = fhirdates.parse(value)
        if moment is not None:
            return moment
    return None
