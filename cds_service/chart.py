"""The chart: one read-only view of the patient, built from the gathered raw JSON.

Building the chart classifies every record once into the catalog's concept groups: by code
through the value sets, then, for a record none of whose codes is known, by name through the
lexicon the note reader uses (with its negation, history and uncertainty rules). Lab results
are read in canonical units; a local lab code is read by the analyte's name when its unit is
one of the analyte's. The chart then answers questions ("LEG_WEAKNESS within 30 days", "latest
potassium") and is never written again: what could not be read is found while building.
Rules read only the chart; the words cards show live in `cards/`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

from . import fhirdates, notes
from .fhircheck import fhir_problem
from .gather import Gap, Gathered
from .labs import LABS, Lab
from .notes import NoteFinding
from .services import NOTE_SIGN_HOOK
from .terminology import (
    SYSTEM_LABELS,
    Coding,
    Hit,
    Terminology,
    coding_list,
    codings_of,
    concept_text,
)

log = logging.getLogger(__name__)
COUNTING_CLINICAL = {"active", "recurrence", "relapse"}
_COUNTS_AS_CURRENT = frozenset(COUNTING_CLINICAL | {None})  # a Condition without a status counts
EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
COUNTING_OBSERVATION = {"final", "amended", "corrected", "preliminary"}
COUNTING_MEDICATION = {"active", "on-hold", "draft"}
COUNTING_STATEMENT = {"active", "intended"}
CONDITION_DATES = ("onsetDateTime", "onsetPeriod", "recordedDate")
OBSERVATION_DATES = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued")
LOW_INTERPRETATION = {"L", "LL"}
HIGH_INTERPRETATION = {"H", "HH"}
DECIDING_INTERPRETATION = LOW_INTERPRETATION | HIGH_INTERPRETATION | {"N"}
# A finding Observation whose value says the finding is absent (CLINICAL_RULES.md conventions):
# SNOMED 2667000 Absent, 410516002 Known absent, 260385009 Negative, 373067005 No, 260413007
# None; HL7 v2-0136 N.
ABSENT_CODES = {"2667000", "410516002", "260385009", "373067005", "260413007", "N"}
ABSENT_WORDS = {"absent", "negative", "no", "not present", "none", "known absent"}
CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
# Note findings the rules may use: current ones; uncertain ones (supporting evidence only); and
# historical ones, which only the back-pain condition of the cauda equina rule reads.
USED_NOTE_STATUSES = ("affirmed", "possible", "historical")
LOCATED_SITES = {"calf", "hamstring", "thigh", "foot", "leg", "back", "buttock"}
# Characters of quoted note text that markdown would read as formatting, links or HTML.
MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~"})
# Observations older than this are never read by a rule (the longest lookback is 12 months).
OLDEST_USED_DAYS = 400
LAB_GROUPS = {lab.value_set: lab for lab in LABS}
# Groups whose coded numbness may describe the saddle area: then it is saddle anaesthesia.
SENSORY_GROUPS = {"NERVE_SYMPTOM", "SENSORY_LOSS"}
ASPIRIN_ANALGESIC_ABOVE_MG = 325.0
_MG = re.compile(r"(?<!\d)(\d+(?:\.\d+)?)\s*mg\b", re.IGNORECASE)  # linear: starts a number


class _once:
    """`functools.cached_property` without its lock: Python 3.11 takes a lock on every first
    access (several microseconds; 3.12 dropped it), and the chart asks a record's date, name
    and day once each for every record it builds. The value is computed on first access and
    stored in the instance's `__dict__`, which later lookups read before this descriptor."""

    def __init__(self, function):
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.function(instance)
        return value


def label_of(concept: object, fallback: str) -> str:
    """The concept's text, else the display of its first well-formed coding that has one (as
    `codings_of` reads them, without making a Coding of each)."""
    if not isinstance(concept, dict):
        return fallback
    text = concept.get("text")
    if isinstance(text, str) and text:
        return text
    for coding in coding_list(concept):
        if isinstance(coding, dict):
            display, code = coding.get("display"), coding.get("code")
            if (
                isinstance(display, str)
                and display
                and isinstance(coding.get("system"), str)
                and isinstance(code, str)
                and code
            ):
                return display
    return fallback


@dataclass(frozen=True)
class Unreadable:
    """A record that could not be interpreted: named in the card detail, never used. `reason`
    is a key of `unreadable:` in cards/_common.yaml; `subject` is the record's name (never its
    id), `values` what the wording quotes (a value, a unit)."""

    reason: str
    subject: str = ""
    day: str | None = None
    values: tuple[tuple[str, str], ...] = ()


# Fact, Match and LabResult, made for every record the chart uses, keep the frozen dataclass's
# equality, repr and read-only fields but not its generated __init__, which sets each field with
# its own object.__setattr__ call: theirs fill the instance's __dict__ in one update (a third to
# a half of the cost). tests/test_chart_construction.py checks each takes exactly its fields,
# with the dataclass's defaults. (NoteFact, rarer, keeps the generated one.)


@dataclass(frozen=True, init=False)
class Fact:
    """A Condition, Observation or note finding that counts, reduced to what rules and cards
    need. `source` says where it came from (a key of `sources:` in cards/_common.yaml)."""

    reference: str  # e.g. Condition/123: for suggestions and logs, never shown as evidence
    code: dict  # the raw CodeableConcept
    date_fields: tuple[str, ...] = field(repr=False, compare=False)
    resource: dict = field(repr=False, compare=False)
    source: str = "problem-list"

    def __init__(
        self,
        reference: str,
        code: dict,
        date_fields: tuple[str, ...],
        resource: dict,
        source: str = "problem-list",
    ) -> None:
        self.__dict__.update(
            reference=reference,
            code=code,
            date_fields=date_fields,
            resource=resource,
            source=source,
        )

    @_once
    def when(self) -> datetime | None:
        return _first_date(self.resource, self.date_fields)

    @_once
    def name(self) -> str:  # asked by every rule and card line that quotes the fact
        return label_of(self.code, "")

    @property
    def side(self) -> str | None:
        """The side a note finding names; coded facts carry theirs in their codes."""
        return None

    @property
    def body_sites(self) -> list[dict]:
        sites = self.resource.get("bodySite")
        if isinstance(sites, dict):  # Observation.bodySite is a single CodeableConcept
            sites = [sites]
        return [s for s in sites or [] if isinstance(s, dict)]

    @_once
    def day(self) -> str | None:
        return self.when.date().isoformat() if self.when else None

    @_once
    def words(self) -> str:
        """The concept's text and displays in lower case, one per line."""
        texts = [concept_text(self.code)] + [c.display for c in codings_of(self.code)]
        return "\n".join(t.lower() for t in texts if t)


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

    @property
    def shown_quote(self) -> str:
        return self.quote.translate(MARKDOWN_SPECIAL)

    @property
    def offered(self) -> bool:
        """Whether a card may offer to add it to the problem list: current, not yet coded, and
        with a catalog code."""
        has_code = next(codings_of(self.code), None) is not None
        return self.status == "affirmed" and not self.coded and has_code


@dataclass(frozen=True, init=False)
class Match:
    """A fact and how it is in a concept group: the coding that matched, or None when its name
    did (the text fallback)."""

    fact: Fact
    coding: Coding | None = None

    def __init__(self, fact: Fact, coding: Coding | None = None) -> None:
        self.__dict__.update(fact=fact, coding=coding)

    @property
    def by_name(self) -> bool:
        return self.coding is None and not isinstance(self.fact, NoteFact)


@dataclass(frozen=True, init=False)
class LabResult:
    lab: Lab
    fact: Fact
    value: float  # in lab.unit
    number: float  # the value as recorded
    unit: str  # the unit as recorded
    interpretation: str | None  # N, L, LL, H or HH when the Observation says so
    range_low: float | None  # reference range, in lab.unit
    range_high: float | None
    by_name: bool = False  # a local code read by the analyte's name

    def __init__(
        self,
        lab: Lab,
        fact: Fact,
        value: float,
        number: float,
        unit: str,
        interpretation: str | None,
        range_low: float | None,
        range_high: float | None,
        by_name: bool = False,
    ) -> None:
        self.__dict__.update(
            lab=lab,
            fact=fact,
            value=value,
            number=number,
            unit=unit,
            interpretation=interpretation,
            range_low=range_low,
            range_high=range_high,
            by_name=by_name,
        )

    def is_low(self) -> bool:
        """Interpretation decides, else the reference range, else the catalog's threshold."""
        if self.interpretation in DECIDING_INTERPRETATION:
            return self.interpretation in LOW_INTERPRETATION
        if self.range_low is not None:
            return self.value < self.range_low
        return self.lab.low_below is not None and self.value < self.lab.low_below

    def is_markedly_low(self) -> bool:
        """LL, or below the catalog's "markedly low" cut-off."""
        if self.interpretation == "LL":
            return True
        below = self.lab.markedly_low_below
        return below is not None and self.value < below

    def is_high(self) -> bool:
        if self.interpretation in DECIDING_INTERPRETATION:
            return self.interpretation in HIGH_INTERPRETATION
        if self.range_high is not None:
            return self.value > self.range_high
        return self.lab.high_above is not None and self.value > self.lab.high_above

    @_once
    def same_unit(self) -> bool:
        """Whether the recorded unit is a spelling of the threshold unit (45 mL/min/{1.73_m2}
        is 45 mL/min/1.73m2): then the value is shown once, as recorded."""
        return all(self.lab.to_canonical(x, self.unit) == x for x in (1.0, 10.0))


@dataclass(frozen=True)
class Medication:
    """An active, on-hold or draft MedicationRequest (or an active MedicationStatement), with
    the concept naming its drug."""

    reference: str
    concept: dict
    when: datetime | None
    resource: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return label_of(self.concept, "")

    @property
    def day(self) -> str | None:
        return self.when.date().isoformat() if self.when else None


@dataclass(frozen=True)
class Allergy:
    reference: str
    concept: dict

    @property
    def name(self) -> str:
        return label_of(self.concept, "")


@dataclass(frozen=True)
class Order:
    """A draft order from `context.draftOrders`, with the concept of what is ordered."""

    reference: str
    resource: dict = field(repr=False, compare=False)
    concept: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return label_of(self.concept, "")

    @property
    def reasons(self) -> list[object]:
        """Its reasonCode list (one object sent for the array was made a list on arrival)."""
        reasons = self.resource.get("reasonCode")
        return reasons if isinstance(reasons, list) else []


Index = dict[str, tuple[Match, ...]]


@dataclass(frozen=True)
class Chart:
    hook: str
    now: datetime
    patient_id: str
    birth_date: date | None
    sex: str | None
    note_text: str
    gaps: tuple[Gap, ...]
    unreadable: tuple[Unreadable, ...]
    terminology: Terminology = field(repr=False)
    # Per concept group, the records in it (classified once, at build).
    current: Index = field(default_factory=dict, repr=False)  # Conditions that count
    past: Index = field(default_factory=dict, repr=False)  # inactive, resolved, "history of"
    findings: Index = field(default_factory=dict, repr=False)  # finding Observations, present
    coded_observations: Index = field(default_factory=dict, repr=False)  # any value
    noted: dict[tuple[str, str], tuple[Match, ...]] = field(default_factory=dict, repr=False)
    lab_results: dict[str, tuple[LabResult, ...]] = field(default_factory=dict, repr=False)
    lab_unreadable: dict[str, tuple[Unreadable, ...]] = field(default_factory=dict, repr=False)
    medications: dict[str, tuple[tuple[Medication, Coding | None], ...]] = field(
        default_factory=dict, repr=False
    )
    allergies: dict[str, tuple[tuple[Allergy, Coding | None], ...]] = field(
        default_factory=dict, repr=False
    )
    allergies_known: bool = True
    draft_orders: tuple[Order, ...] = ()
    orders: dict[str, tuple[tuple[Order, Coding | None], ...]] = field(
        default_factory=dict, repr=False
    )
    selections: tuple[str, ...] = ()
    note_findings: tuple[NoteFinding, ...] = ()
    note_facts: tuple[NoteFact, ...] = ()
    note_reference: str = "draft note"
    # Body-site groups of coded records (reference -> groups), and draft orders by reason group.
    sites: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    order_reasons: dict[str, tuple[Order, ...]] = field(default_factory=dict, repr=False)
    # Answers worked out once, on first asking (the chart never changes), in one dict: lookback
    # instants by days (int keys), each lab's results by (value set, lookback days) (`_lab`),
    # the groups with records ("groups", `has_any`), the age ("age"). One field, not one per
    # answer: from its 30th attribute on, every attribute read on the chart is dearer (CPython
    # 3.11 keeps 29 inline; callgrind: +30K instructions a request).
    _memo: dict[object, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    # --- who -----------------------------------------------------------------------------

    @property
    def patient_reference(self) -> str:
        return f"Patient/{self.patient_id}"

    @property
    def age(self) -> int | None:
        if self.birth_date is None:
            return None
        age = self._memo.get("age")  # asked by several rules and cards
        if age is None:
            today = self.now.date()
            born = self.birth_date
            before_birthday = (today.month, today.day) < (born.month, born.day)
            age = self._memo["age"] = today.year - born.year - before_birthday
        return age

    def since(self, days: int) -> datetime:
        moment = self._memo.get(days)
        if moment is None:
            moment = self._memo[days] = self.now - timedelta(days=days)
        return moment

    def once(self, key: str, work: Callable[[Chart], object]) -> object:
        """`work(self)` worked out on the first asking under `key` and remembered in the
        chart's memo (a shared answer several rules ask for, e.g. the episode's onset)."""
        memo = self._memo
        if key in memo:
            return memo[key]
        answer = memo[key] = work(self)
        return answer

    # --- concepts --------------------------------------------------------------------------
    # The rules ask these some two hundred times a request, mostly for groups the record does
    # not have: each method reads its index directly and answers an absent group at once.

    def _within(self, matches: tuple[Match, ...], within_days: int | None) -> list[Match]:
        if within_days is None:
            return list(matches)
        since = self.since(within_days)
        return [m for m in matches if (when := m.fact.when) is not None and when >= since]

    def has_any(self, groups: frozenset[str]) -> bool:
        """Whether any of the groups has a Condition (current or past), an Observation or a
        note finding, whatever its date or status: a rule asking several questions of groups
        the record usually lacks (pregnancy) skips them all when none is there."""
        present = self._memo.get("groups")
        if present is None:
            noted = (group for group, _ in self.noted)
            index = (self.current, self.past, self.findings, self.coded_observations)
            present = self._memo["groups"] = frozenset().union(*index, noted)
        return not groups.isdisjoint(present)

    def conditions_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """Conditions that count (active, recurrence, relapse, or no status) in the group."""
        matches = self.current.get(group)
        return self._within(matches, within_days) if matches else []

    def past_conditions_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """Inactive or resolved Conditions of the group, and names that say "history of"."""
        matches = self.past.get(group)
        return self._within(matches, within_days) if matches else []

    def observations_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """Finding Observations of the group that record it present."""
        matches = self.findings.get(group)
        return self._within(matches, within_days) if matches else []

    def observations_coded(self, group: str, within_days: int | None = None) -> list[Match]:
        """Every Observation coded in the group, whatever its value (pregnancy status, dates)."""
        matches = self.coded_observations.get(group)
        return self._within(matches, within_days) if matches else []

    def noted_in(self, group: str, *statuses: str) -> list[Match]:
        """Findings of the group read from the draft note, with one of the statuses (default:
        current, "affirmed"; "possible" ones are supporting evidence only). Dated now."""
        if not self.noted:
            return []
        return [
            m for status in statuses or ("affirmed",) for m in self.noted.get((group, status), ())
        ]

    # The three below read the indexes themselves rather than calling conditions_in and
    # noted_in (some thirty calls a request, nearly all for a group the record lacks): the
    # note's index is empty except at note-sign, and an absent group costs one lookup.

    def findings_in(self, group: str, within_days: int | None = None) -> list[Match]:
        """A symptom or problem, coded as a Condition or an Observation finding, or written in
        the draft note as current (dated now)."""
        conditions = self.current.get(group)
        observations = self.findings.get(group)
        found = self._within(conditions, within_days) if conditions else []
        if observations:
            found += self._within(observations, within_days)
        if self.noted:
            found += self.noted.get((group, "affirmed"), ())
        return found

    def problems_in(self, group: str) -> list[Match]:
        """A problem that counts: an active Condition, or current in the draft note."""
        conditions = self.current.get(group)
        found = list(conditions) if conditions else []
        if self.noted:
            found += self.noted.get((group, "affirmed"), ())
        return found

    def lasting_in(self, group: str) -> list[Match]:
        """A lasting condition (CKD, diabetes, cancer history...): active, or in the draft note
        as current or as past medical history, which for such a condition means it is there."""
        conditions = self.current.get(group)
        found = list(conditions) if conditions else []
        if self.noted:
            found += self.noted.get((group, "affirmed"), ())
            found += self.noted.get((group, "historical"), ())
        return found

    # --- labs, medications, allergies, orders ----------------------------------------------

    def results(self, lab: Lab) -> tuple[list[LabResult], list[Unreadable]]:
        """Readable results within the lab's lookback, newest first; and what was unreadable."""
        readable, unreadable = self._lab(lab)
        return list(readable), list(unreadable)

    def latest_result(self, lab: Lab) -> tuple[LabResult | None, list[Unreadable]]:
        readable, unreadable = self._lab(lab)
        return (readable[0] if readable else None), list(unreadable)

    def _lab(self, lab: Lab) -> tuple[tuple[LabResult, ...], tuple[Unreadable, ...]]:
        """What `results` answers, as the tuples worked out once per lab (several rules read
        the same ones): callers copy them."""
        results = self.lab_results.get(lab.value_set)
        if results is None:  # most labs a rule asks for are not in the record
            return (), self.lab_unreadable.get(lab.value_set, ())
        key = (lab.value_set, lab.lookback_days)
        found = self._memo.get(key)
        if found is None:
            since = self.since(lab.lookback_days)
            latest_allowed = self.now + timedelta(days=1)
            readable = tuple(r for r in results if since <= r.fact.when <= latest_allowed)
            found = self._memo[key] = (
                readable,
                self.lab_unreadable.get(lab.value_set, ()),
            )
        return found

    def medications_in(self, group: str) -> list[tuple[Medication, Coding | None]]:
        """Active medications in the group, each with the coding that matched (None: by name)."""
        return list(self.medications.get(group, ()))

    def allergies_in(self, group: str) -> list[tuple[Allergy, Coding | None]]:
        return list(self.allergies.get(group, ()))

    def orders_in(self, group: str) -> list[tuple[Order, Coding | None]]:
        """The orders to check (selected at order-select, all at order-sign) in the group."""
        chosen = {o.reference for o in self.orders_to_check}
        return [(o, c) for o, c in self.orders.get(group, ()) if o.reference in chosen]

    def draft_orders_in(self, group: str) -> list[tuple[Order, Coding | None]]:
        """Every draft order of the request in the group, checked or not."""
        return list(self.orders.get(group, ()))

    def orders_for(self, group: str) -> list[Order]:
        """Draft orders whose reason is in the group ("for cramps")."""
        return list(self.order_reasons.get(group, ()))

    def sites_of(self, fact: Fact) -> frozenset[str]:
        """The concept groups of a record's body sites (SCIATIC_PATH_SITE, SADDLE_SITE, ...)."""
        return self.sites.get(fact.reference, frozenset())

    @property
    def orders_to_check(self) -> tuple[Order, ...]:
        return _orders_to_check(self.hook, self.draft_orders, self.selections)

    def note_fact(self, reference: str | None) -> NoteFact | None:
        """The note finding a piece of evidence quotes (its reference), if it is one."""
        if not reference or not self.note_facts:
            return None
        return next((f for f in self.note_facts if f.reference == reference), None)


def is_negated(observation: dict) -> bool:
    """A finding Observation that records the finding as absent."""
    if observation.get("valueBoolean") is False:
        return True
    value = observation.get("valueCodeableConcept")
    if isinstance(value, dict):
        if concept_text(value).strip().lower() in ABSENT_WORDS:
            return True
        return any(
            c.code in ABSENT_CODES or c.display.strip().lower() in ABSENT_WORDS
            for c in codings_of(value)
        )
    if isinstance(value := observation.get("valueString"), str):
        return value.strip().lower() in ABSENT_WORDS
    return False


# --- reading values ------------------------------------------------------------------------


def _lab_value(lab: Lab, fact: Fact, by_name: bool) -> LabResult | Unreadable:
    quantity = fact.resource.get("valueQuantity")
    if not isinstance(quantity, dict):
        return Unreadable("no-value", fact.name or lab.name, fact.day)
    value, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    number = _finite(value)
    if number is None:
        return Unreadable("not-a-number", fact.name or lab.name, fact.day)
    if not isinstance(unit, str) or not unit:
        return Unreadable("no-unit", fact.name or lab.name, fact.day, (("value", f"{number:g}"),))
    converted = lab.to_canonical(number, unit)
    if converted is None:
        values = (("value", f"{number:g}"), ("unit", unit))
        return Unreadable("unit", fact.name or lab.name, fact.day, values)
    low, high = _reference_range(lab, fact.resource)
    return LabResult(
        lab,
        fact,
        converted,
        number,
        unit,
        _interpretation(fact.resource),
        low,
        high,
        by_name,
    )


def _interpretation(resource: dict) -> str | None:
    interpretations = resource.get("interpretation") or []
    if isinstance(interpretations, dict):
        interpretations = [interpretations]
    for concept in interpretations if isinstance(interpretations, list) else []:
        for coding in coding_list(concept):  # the well-formed codings, as codings_of reads them
            if isinstance(coding, dict) and isinstance(coding.get("system"), str):
                code = coding.get("code")
                if isinstance(code, str) and code in DECIDING_INTERPRETATION:
                    return code
    return None


def _reference_range(lab: Lab, resource: dict) -> tuple[float | None, float | None]:
    ranges = resource.get("referenceRange") or []
    for entry in ranges if isinstance(ranges, list) else []:
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


def _analyte_words(text: str) -> tuple[str, ...]:
    return tuple("".join(c if c.isalnum() or c == "+" else " " for c in text.lower()).split())


def lab_by_name(concept: object, unit: object) -> Lab | None:
    """The analyte a local lab code names (its text or a display), when the unit is one of the
    analyte's: "POTASSIUM" in mmol/L is a potassium; "Calcium, ionized" is never a total."""
    if not isinstance(unit, str) or not unit:
        return None
    texts = [concept_text(concept)] + [c.display for c in codings_of(concept)]
    return _lab_named(tuple(filter(None, texts)), unit)


@lru_cache(maxsize=4096)
def _lab_named(texts: tuple[str, ...], unit: str) -> Lab | None:
    """lab_by_name's answer, once per distinct name and unit (a record repeats its local lab
    codes at every visit)."""
    labs = [lab for lab in LABS if lab.to_canonical(1.0, unit) is not None]
    for text in texts:
        joined = f" {' '.join(_analyte_words(text))} "
        for lab in labs:
            if any(f" {w} " in joined for w in lab.not_with):
                continue
            if any(f" {' '.join(_analyte_words(name))} " in joined for name in lab.names):
                return lab
    return None


# --- building the chart --------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _read_name(text: str) -> tuple[tuple[str, str], ...]:
    """(group, status) pairs the lexicon reads in a record's name: once per distinct text."""
    reader = notes.read_name
    lexicon = notes.lexicon()
    pairs: dict[tuple[str, str], None] = {}
    for finding in not_saddle_numbness(reader(text)):
        for group in lexicon.concepts[finding.concept].groups:
            pairs[(group, finding.status)] = None
    return tuple(pairs)


def not_saddle_numbness(findings: Iterable[NoteFinding]) -> tuple[NoteFinding, ...]:
    """The findings without a nerve symptom read inside a saddle anaesthesia ("saddle
    numbness", "perineal numbness"): saddle numbness is a red flag, never a nerve symptom."""
    findings = tuple(findings)
    groups = notes.lexicon().concepts
    saddle = [
        (f.start, f.end) for f in findings if "SADDLE_ANAESTHESIA" in groups[f.concept].groups
    ]
    return tuple(
        f
        for f in findings
        if "NERVE_SYMPTOM" not in groups[f.concept].groups
        or not any(start <= f.start and f.end <= end for start, end in saddle)
    )


def _names_of(concept: dict) -> list[str]:
    texts = [concept_text(concept)] + [c.display for c in codings_of(concept)]
    if isinstance(concept, dict):  # codings without a system still carry a display
        texts += [
            c["display"]
            for c in coding_list(concept)
            if isinstance(c, dict) and isinstance(c.get("display"), str) and not c.get("system")
        ]
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def _by_name(concept: dict) -> dict[str, str]:
    """Group -> status, for a record whose codes no value set knows: its text and displays read
    through the lexicon. Affirmed wins over historical, which wins over other statuses."""
    rank = {"affirmed": 0, "historical": 1}
    found: dict[str, str] = {}
    for text in _names_of(concept):
        for group, status in _read_name(text):
            if group not in found or rank.get(status, 9) < rank.get(found[group], 9):
                found[group] = status
    return found


def _subject(fact: Fact) -> str:
    """What an unreadable record is called in the card detail: its name; without one, its kind
    and short code label ("Condition ICD-10-CM G83.4"); never its resource id."""
    if fact.name:
        return fact.name
    kind = fact.resource.get("resourceType")
    kind = kind if isinstance(kind, str) else "record"
    for coding in codings_of(fact.code):
        if coding.system in SYSTEM_LABELS:
            return f"{kind} {SYSTEM_LABELS[coding.system]} {coding.code}"
    return f"a {kind}"


def _concept_key(concept: dict) -> tuple | None:
    """A hashable key for a CodeableConcept's text and codings, or None when it has none, or
    when it is longer than a real concept is (_KEY_MAX_CHARS): such a concept is classified
    afresh each time, never remembered, so the caches hold at most _CLASSIFIED_MAX short keys
    however long the texts a client sends."""
    text, codings = concept.get("text"), concept.get("coding")
    size = len(text) if isinstance(text, str) else 0
    parts = []
    for c in codings if isinstance(codings, list) else ():
        if isinstance(c, dict):
            part = (c.get("system"), c.get("code"), c.get("display"))
            for item in part:
                if isinstance(item, str):
                    size += len(item)
        else:
            part = c
            size += len(c) if isinstance(c, str) else 1
        parts.append(part)
    key = (text, tuple(parts))
    try:
        hash(key)
    except TypeError:  # a malformed coding (a list where a string belongs)
        return None
    return key if size <= _KEY_MAX_CHARS else None


# Longer than any real concept's text, codes and displays together (SNOMED CT's and LOINC's
# longest displays are a few hundred characters).
_KEY_MAX_CHARS = 2_000


class _Builder:
    def __init__(self, terminology: Terminology, now: datetime, unreadable: list[Unreadable]):
        self.terminology = terminology
        self.now = now
        self.oldest = now - timedelta(days=OLDEST_USED_DAYS)
        self.unreadable = unreadable
        self.current: dict[str, list[Match]] = {}
        self.past: dict[str, list[Match]] = {}
        self.findings: dict[str, list[Match]] = {}
        self.coded_observations: dict[str, list[Match]] = {}
        self.lab_results: dict[str, list[LabResult]] = {}
        self.lab_unreadable: dict[str, list[Unreadable]] = {}
        self.sites: dict[str, frozenset[str]] = {}

    def site_groups(self, fact: Fact) -> frozenset[str]:
        """The groups a record's body sites belong to, by code or by name; recorded once."""
        if fact.reference in self.sites:
            return self.sites[fact.reference]
        found: set[str] = set()
        for site in fact.body_sites:
            found |= self.terminology.classify(site).keys()
            found |= self.terminology.named(site).keys()
        self.sites[fact.reference] = frozenset(found)
        return self.sites[fact.reference]

    def valid(self, fact: Fact, dated: bool, name: str = "") -> bool:
        """Whether a classified record can be used: valid FHIR R4B where rules read it, and,
        when it needs a date, with a readable one. Otherwise it is named as unreadable (by its
        name, else `name`, e.g. the analyte, else its kind and code)."""
        problem = fhir_problem(fact.reference, fact.resource)
        if problem is not None:
            where = problem.split(" at ", 1)[1].split(" ", 1)[0] if " at " in problem else ""
            subject = fact.name or name or _subject(fact)
            self.unreadable.append(
                Unreadable("invalid", subject, fact.day, (("where", where or "resource"),))
            )
            return False
        if dated and fact.when is None:
            self.unreadable.append(Unreadable("no-date", fact.name or name or _subject(fact)))
            return False
        return True

    def groups(self, concept: dict) -> tuple[dict[str, Hit], bool]:
        """The groups a CodeableConcept is coded in, and whether its name says saddle
        anaesthesia (see `_classify`): worked out once per distinct concept, and remembered
        across requests (records repeat the same lab and problem codes, and so do patients; the
        answer depends on the concept's codes and text, the value sets and the lexicon only).
        The groups may be the remembered dict itself: read it, never change it (`saddle`
        changes a copy)."""
        key = _concept_key(concept)
        if key is None:
            return _classify(self.terminology, concept)
        known = _CLASSIFIED.get(key)
        if known is None or known[0] is not self.terminology:
            if len(_CLASSIFIED) >= _CLASSIFIED_MAX:
                _CLASSIFIED.clear()
            known = _CLASSIFIED[key] = (self.terminology, *_classify(self.terminology, concept))
        return known[1], known[2]

    def saddle(self, fact: Fact, hits: dict[str, Hit], named: bool) -> dict[str, Hit]:
        """Numbness coded as a nerve symptom that describes the saddle area (its name, which
        `named` says, or a saddle body site) is saddle anaesthesia, never a nerve symptom: the
        hits so read (a changed copy; `hits` itself may be the remembered classification)."""
        if SENSORY_GROUPS.isdisjoint(hits):
            return hits
        at_saddle = "SADDLE_SITE" in self.site_groups(fact)
        if at_saddle or named:
            coding = next(
                (hits[g].coding for g in ("NERVE_SYMPTOM", "SENSORY_LOSS") if g in hits), None
            )
            hits = dict(hits)
            hits.pop("NERVE_SYMPTOM", None)
            hits["SADDLE_ANAESTHESIA"] = Hit("SADDLE_ANAESTHESIA", coding)
        return hits

    def condition(self, fact: Fact, counts: bool) -> None:
        hits, named = self.groups(fact.code)
        statuses: dict[str, str] = {}
        if not hits:
            statuses = _by_name(fact.code)
            if not statuses:
                return
        else:
            hits = self.saddle(fact, hits, named)
        if not self.valid(fact, dated=False):
            return
        if fact.when is None and any(fact.resource.get(f) is not None for f in fact.date_fields):
            # A date that is there but cannot be read is named; the record then counts only
            # where no lookback asks for its date (an active problem), as an undated one does.
            self.unreadable.append(Unreadable("no-date", _subject(fact)))
        if "bodySite" in fact.resource and fact.body_sites:
            self.site_groups(fact)
        for group, hit in hits.items():
            (self.current if counts else self.past).setdefault(group, []).append(
                Match(fact, hit.coding)
            )
        for group, status in statuses.items():
            if status == "affirmed":
                (self.current if counts else self.past).setdefault(group, []).append(Match(fact))
            elif status == "historical":
                self.past.setdefault(group, []).append(Match(fact))

    def observation(self, fact: Fact) -> None:
        hits, named = self.groups(fact.code)
        quantity = fact.resource.get("valueQuantity")
        labs = [LAB_GROUPS[g] for g in hits if g in LAB_GROUPS]
        by_name = False
        if not hits and isinstance(quantity, dict):
            lab = lab_by_name(fact.code, quantity.get("code") or quantity.get("unit"))
            if lab is not None:
                labs, by_name = [lab], True
        if labs:
            if fact.when is not None and fact.when < self.oldest:
                return
            if not self.valid(fact, dated=True, name=labs[0].name):
                return
            for lab in labs:
                result = _lab_value(lab, fact, by_name)
                if isinstance(result, Unreadable):
                    self.lab_unreadable.setdefault(lab.value_set, []).append(result)
                else:
                    self.lab_results.setdefault(lab.value_set, []).append(result)
            return
        statuses: dict[str, str] = {}
        if not hits:
            if isinstance(quantity, dict):
                return  # a measurement of something no rule reads
            statuses = _by_name(fact.code)
            if not statuses:
                return
        else:
            hits = self.saddle(fact, hits, named)
        if fact.when is not None and fact.when < self.oldest:
            return
        if not self.valid(fact, dated=True):
            return
        present = not is_negated(fact.resource)
        if "bodySite" in fact.resource and fact.body_sites:
            self.site_groups(fact)
        for group, hit in hits.items():
            match = Match(fact, hit.coding)
            self.coded_observations.setdefault(group, []).append(match)
            if present:
                self.findings.setdefault(group, []).append(match)
        for group, status in statuses.items():
            if status == "affirmed" and present:
                self.findings.setdefault(group, []).append(Match(fact))


def build_chart(
    hook: str,
    context: dict,
    gathered: Gathered,
    terminology: Terminology,
    now: datetime,
) -> Chart:
    patient_id = str(context["patientId"])
    patient = next((p for p in gathered.of_type("Patient") if p.get("id") == patient_id), None)
    unreadable: list[Unreadable] = []
    mine = {
        kind: _about(gathered.of_type(kind), patient_id)
        for kind in (
            "Condition",
            "Observation",
            "MedicationRequest",
            "MedicationStatement",
            "AllergyIntolerance",
        )
    }
    others = sum(len(gathered.of_type(kind)) - len(found) for kind, found in mine.items())
    if others:  # one line for them all (one per kind would be merged into a wrong count)
        unreadable.append(Unreadable("other-patient", values=(("count", str(others)),)))
    builder = _Builder(terminology, now, unreadable)
    for fact, counts in _conditions(mine["Condition"], unreadable):
        builder.condition(fact, counts)
    for fact in _observations(mine["Observation"], unreadable):
        builder.observation(fact)
    gaps = list(gathered.gaps)
    if patient is None:
        unreadable.append(Unreadable("no-patient"))
    patient = patient or {}
    medications_by_id = {
        m.get("id"): m for m in gathered.of_type("Medication") if isinstance(m.get("id"), str)
    }
    gender = patient.get("gender")
    note = context.get("note")
    note_text = _note_text(note, unreadable)
    note_findings: tuple[NoteFinding, ...] = ()
    if hook == NOTE_SIGN_HOOK and note_text:
        if not notes.read_in_full(note_text):
            unreadable.append(
                Unreadable("note-too-long", values=(("limit", str(notes.MAX_NOTE_CHARS)),))
            )
        try:
            note_findings = not_saddle_numbness(notes.read_note(note_text))
        except Exception as error:  # a defect of the reader must not cost the coded data's cards
            log.error("the note reader failed: %s (note text not logged)", type(error).__name__)
            unreadable.append(Unreadable("note-unreadable"))
    note_id = note.get("id") if isinstance(note, dict) else None
    note_reference = f"DocumentReference/{note_id}" if isinstance(note_id, str) else "draft note"
    medications = _medications(
        mine["MedicationRequest"], mine["MedicationStatement"], medications_by_id
    )
    draft_orders = tuple(_orders(context.get("draftOrders")))
    selections = tuple(s for s in context.get("selections") or () if isinstance(s, str))
    coded = {g for index in (builder.current, builder.findings) for g in index}
    note_facts = _note_facts(
        note_findings, note_text, note_reference, f"Patient/{patient_id}", now, coded
    )
    noted: dict[tuple[str, str], list[Match]] = {}
    for fact in note_facts:
        for group in fact.groups:
            noted.setdefault((group, fact.status), []).append(Match(fact, _first_coding(fact)))
    return Chart(
        hook=hook,
        now=now,
        patient_id=patient_id,
        birth_date=fhirdates.parse_date(patient.get("birthDate")),
        sex=gender if isinstance(gender, str) else None,
        note_text=note_text,
        gaps=tuple(gaps),
        unreadable=tuple(dict.fromkeys(unreadable)),
        terminology=terminology,
        current=_freeze(builder.current),
        past=_freeze(builder.past),
        findings=_freeze(builder.findings),
        coded_observations=_freeze(builder.coded_observations),
        lab_results={
            k: tuple(sorted(v, key=lambda r: r.fact.when, reverse=True))
            for k, v in builder.lab_results.items()
        },
        lab_unreadable={k: tuple(v) for k, v in builder.lab_unreadable.items()},
        medications=_classified(medications, terminology, _medication_extra),
        allergies=_classified(
            list(_allergies(mine["AllergyIntolerance"])), terminology, lambda _: ()
        ),
        allergies_known="allergies" not in gathered.unavailable,
        draft_orders=draft_orders,
        orders=_classified(list(draft_orders), terminology, lambda _: ()),
        sites=dict(builder.sites),
        order_reasons=_by_reason(draft_orders, terminology),
        selections=selections,
        note_findings=note_findings,
        note_facts=note_facts,
        noted={k: tuple(v) for k, v in noted.items()},
        note_reference=note_reference,
    )


def _by_reason(orders: tuple[Order, ...], terminology: Terminology) -> dict[str, tuple]:
    """Draft orders by the groups of their reasonCode: by code, else by name."""
    out: dict[str, list[Order]] = {}
    for order in orders:
        groups: set[str] = set()
        for reason in order.reasons:
            if not isinstance(reason, dict):
                continue
            found = terminology.classify(reason).keys()
            if not found:
                found = {g for g, status in _by_name(reason).items() if status == "affirmed"}
            groups |= set(found)
        for group in groups:
            out.setdefault(group, []).append(order)
    return {group: tuple(found) for group, found in out.items()}


def _freeze(index: dict[str, list[Match]]) -> Index:
    return {group: tuple(matches) for group, matches in index.items()}


def _first_coding(fact: NoteFact) -> Coding | None:
    return next(codings_of(fact.code), None)


def _orders_to_check(hook: str, orders: tuple[Order, ...], selections: tuple[str, ...]):
    if hook == "order-select":
        chosen = set(selections)
        return tuple(o for o in orders if o.reference in chosen)
    if hook == "order-sign":
        return orders
    return ()


def _medication_extra(medication: Medication) -> tuple[str, ...]:
    """Aspirin above 325 mg a dose is an NSAID at analgesic doses (the catalog's NSAID)."""
    if not _may_name_aspirin(medication.concept):
        return ()
    names = " ".join(_names_of(medication.concept)).lower()
    if "aspirin" not in names and "acetylsalicylic" not in names:
        return ()
    dose = _dose_mg(medication.resource)
    if dose is None:
        strengths = [float(m) for m in _MG.findall(names)]
        dose = max(strengths) if strengths else None
    return ("NSAID",) if dose is not None and dose > ASPIRIN_ANALGESIC_ABOVE_MG else ()


def _may_name_aspirin(concept: dict) -> bool:
    """Whether the concept's text or any coding's display mentions aspirin: a quick test on
    every string `_names_of` could read (and more), so that a drug that is not aspirin, nearly
    every one, skips reading its names."""
    codings = concept.get("coding")
    texts = [concept.get("text")]
    if isinstance(codings, list):
        texts += [c.get("display") for c in codings if isinstance(c, dict)]
    for text in texts:
        if isinstance(text, str):
            lowered = text.lower()
            if "aspirin" in lowered or "acetylsalicylic" in lowered:
                return True
    return False


def _dose_mg(resource: dict) -> float | None:
    for instruction in resource.get("dosageInstruction") or []:
        if not isinstance(instruction, dict):
            continue
        for rate in instruction.get("doseAndRate") or []:
            quantity = rate.get("doseQuantity") if isinstance(rate, dict) else None
            if (
                isinstance(quantity, dict)
                and (quantity.get("code") or quantity.get("unit")) == "mg"
            ):
                number = _finite(quantity.get("value"))
                if number is not None:
                    return number
    return None


# Concept key -> (the terminology that classified it, its hits, whether its name says saddle
# anaesthesia); cleared when full. The saddle reading comes from the note lexicon, which is
# loaded once per process (notes.lexicon): a lexicon that could be reloaded would have to
# clear this too.
_CLASSIFIED: dict[tuple, tuple[Terminology, dict[str, Hit], bool]] = {}
_CLASSIFIED_MAX = 20_000
# The same for drug, allergy and order concepts, whose answer includes the groups they name.
_CODED_OR_NAMED: dict[tuple, tuple[Terminology, dict[str, Hit]]] = {}


def _classify(terminology: Terminology, concept: dict) -> tuple[dict[str, Hit], bool]:
    """The groups a record's concept is coded in; and, for numbness coded as a nerve symptom,
    whether its text or a display reads as saddle anaesthesia (`_Builder.saddle`)."""
    hits = terminology.classify(concept)
    named = not SENSORY_GROUPS.isdisjoint(hits) and any(
        group == "SADDLE_ANAESTHESIA" and status == "affirmed"
        for text in _names_of(concept)
        for group, status in _read_name(text)
    )
    return hits, named


def _classified(items: list, terminology: Terminology, extra) -> dict:
    """Group -> (item, coding or None) for medications, allergies and orders: by code, else by
    ingredient or class name (whole words)."""
    out: dict[str, list] = {}
    for item in items:
        hits = _coded_or_named(item.concept, terminology)
        for group in extra(item):
            hits.setdefault(group, Hit(group, None))
        for group, hit in hits.items():
            out.setdefault(group, []).append((item, hit.coding))
    return {group: tuple(found) for group, found in out.items()}


def _coded_or_named(concept: dict, terminology: Terminology) -> dict[str, Hit]:
    """The groups a drug, allergy or order concept is in by code, then by name: worked out
    once per distinct concept and remembered across requests, as the records' groups are."""
    key = _concept_key(concept)
    if key is None:
        return _codes_then_names(concept, terminology)
    known = _CODED_OR_NAMED.get(key)
    if known is None or known[0] is not terminology:
        if len(_CODED_OR_NAMED) >= _CLASSIFIED_MAX:
            _CODED_OR_NAMED.clear()
        known = _CODED_OR_NAMED[key] = (terminology, _codes_then_names(concept, terminology))
    return dict(known[1])


def _codes_then_names(concept: dict, terminology: Terminology) -> dict[str, Hit]:
    hits = terminology.classify(concept)
    for group, hit in terminology.named(concept).items():
        hits.setdefault(group, hit)
    return hits


def _about(resources: list[dict], patient_id: str) -> list[dict]:
    """The resources about this patient (how many name another one goes in the card detail)."""
    # The usual spelling, `Patient/<id>`, is recognised without splitting it (an empty id, or
    # one with a slash in it, is left to referenced_id, which reads only the last part).
    usual = f"Patient/{patient_id}" if patient_id and "/" not in patient_id else None
    if usual is None:
        return [r for r in resources if _about_patient(r, patient_id)]
    about = []
    for resource in resources:  # nearly every one names the patient as `usual`: no call for it
        subject = resource.get("subject")
        if (isinstance(subject, dict) and subject.get("reference") == usual) or _about_patient(
            resource, patient_id, usual
        ):
            about.append(resource)
    return about


def _about_patient(resource: dict, patient_id: str, usual: str | None = None) -> bool:
    """Resources about another patient are never used (a safety net against mixed-up data)."""
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict):
            reference = ref.get("reference")
            if isinstance(reference, str):
                return reference == usual or referenced_id(reference) == patient_id
    return True


def referenced_id(reference: str) -> str:
    """The id in `Patient/1`, `https://ehr/fhir/Patient/1` or `Patient/1/_history/3`."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1]


def _status(concept: object) -> str | None:
    """The code of the first well-formed coding (as `codings_of` reads them); without one, of
    the first coding that has a code (codings without a system still carry the status)."""
    if not isinstance(concept, dict):
        return None
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return None
    fallback = None
    for coding in codings:  # as coding_list reads them
        if isinstance(coding, dict):
            code = coding.get("code")
            if isinstance(code, str):
                if code and isinstance(coding.get("system"), str):
                    return code
                if fallback is None:
                    fallback = code
    return fallback


def _reference(resource: dict) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid if isinstance(rid, str) else '?'}"


def _conditions(resources: list[dict], unreadable: list[Unreadable]) -> Iterator[tuple[Fact, bool]]:
    """Each Condition not refuted or entered in error, and whether it counts as current."""
    for resource in resources:
        clinical = _status(resource.get("clinicalStatus"))
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(Unreadable("no-code", "a Condition"))
            continue
        counts = clinical in _COUNTS_AS_CURRENT
        source = "problem-list" if counts else "past-problem"
        yield Fact(_reference(resource), code, CONDITION_DATES, resource, source), counts


def _observation_source(resource: dict) -> str:
    """The source of an Observation: `lab` when a category codes laboratory, else `vital-sign`
    when one codes vital-signs, else `finding`."""
    categories = resource.get("category")
    vital = False
    for concept in categories if isinstance(categories, list) else [categories]:
        for coding in coding_list(concept):  # the well-formed codings, as codings_of reads them
            if isinstance(coding, dict) and isinstance(coding.get("system"), str):
                code = coding.get("code")
                if code == "laboratory":
                    return "lab"
                vital = vital or code == "vital-signs"
    return "vital-sign" if vital else "finding"


def _observations(resources: list[dict], unreadable: list[Unreadable]) -> Iterator[Fact]:
    for resource in resources:
        status = resource.get("status")
        if not isinstance(status, str):  # a list or object: unhashable, and no status at all
            unreadable.append(Unreadable("no-status", "an Observation"))
            continue
        if status not in COUNTING_OBSERVATION:
            continue
        code = resource.get("code")
        if not isinstance(code, dict):
            unreadable.append(Unreadable("no-code", "an Observation"))
            continue
        yield Fact(
            _reference(resource),
            code,
            OBSERVATION_DATES,
            resource,
            _observation_source(resource),
        )


def _medications(
    requests: list[dict], statements: list[dict], medications_by_id: dict[str, dict]
) -> list[Medication]:
    out = []
    for resource, counting, date_field in [
        *((r, COUNTING_MEDICATION, "authoredOn") for r in requests),
        *((s, COUNTING_STATEMENT, "effectiveDateTime") for s in statements),
    ]:
        status = resource.get("status")
        if not isinstance(status, str) or status not in counting:
            continue
        out.append(
            Medication(
                _reference(resource),
                medication_concept(resource, medications_by_id),
                fhirdates.parse(resource.get(date_field)),
                resource,
            )
        )
    return out


def _allergies(resources: list[dict]) -> Iterator[Allergy]:
    for resource in resources:
        clinical = _status(resource.get("clinicalStatus"))
        if clinical not in {"active", None}:
            continue
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        code = resource.get("code")
        if isinstance(code, dict):
            yield Allergy(_reference(resource), code)


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


def _note_text(note: object, unreadable: list[Unreadable]) -> str:
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
            unreadable.append(Unreadable("note-undecodable"))
    return "\n".join(parts)


def _note_facts(
    findings: tuple[NoteFinding, ...],
    text: str,
    note_reference: str,
    patient_reference: str,
    now: datetime,
    coded_groups: set[str],
) -> tuple[NoteFact, ...]:
    """One fact per concept, status and side the note mentions (its first mention, or the
    first that names a body site), for the statuses rules read."""
    if not findings:
        return ()
    lexicon = notes.lexicon()
    chosen: dict[tuple, NoteFinding] = {}
    for finding in findings:
        if finding.status not in USED_NOTE_STATUSES:
            continue
        key = (finding.concept, finding.status, finding.side)
        if key not in chosen or (chosen[key].site is None and finding.site is not None):
            chosen[key] = finding
    facts, references = [], set()
    for finding in sorted(chosen.values(), key=lambda f: f.start):
        concept = lexicon.concepts[finding.concept]
        reference = f"{note_reference}, characters {finding.start}-{finding.end}"
        if reference in references:
            reference += f" ({concept.label.lower()})"
        references.add(reference)
        code, quote = _located(finding, concept.label), finding.quote(text)
        source = {"possible": "note-uncertain", "historical": "note-historical"}.get(
            finding.status, "draft-note"
        )
        coded = bool(coded_groups & set(concept.groups))
        if source == "draft-note" and coded:
            source = "draft-note-coded"
        facts.append(
            NoteFact(
                reference,
                code,
                ("recordedDate",),
                _note_condition(patient_reference, now, finding, concept, code, quote),
                source,
                finding=finding,
                quote=quote,
                groups=concept.groups,
                coded=coded,
            )
        )
    return tuple(facts)


def _note_condition(
    patient_reference: str,
    now: datetime,
    finding: NoteFinding,
    concept: notes.Concept,
    code: dict,
    quote: str,
) -> dict:
    """The Condition a note finding would be added to the problem list as."""
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": CLINICAL_SYSTEM, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION_SYSTEM, "code": "provisional"}]},
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
        "subject": {"reference": patient_reference},
        "recordedDate": now.date().isoformat(),
        "note": [{"text": f"Read from the draft note at signing: “{quote}”"}],
    }
    if concept.body_site:
        condition["bodySite"] = [concept.body_site]
    elif finding.site in LOCATED_SITES:
        condition["bodySite"] = [{"text": " ".join(filter(None, (finding.side, finding.site)))}]
    return condition


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
