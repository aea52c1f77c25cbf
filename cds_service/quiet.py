"""Feedback that quiets repeated cards (issue 16, point 3).

When a clinician overrides a card with `already-addressed` or `patient-declined` (the reasons of
`quieting_override_reasons` in cards/_common.yaml, of our override-reason system), the same
rule's card is not shown again for that patient for the rule's `quiet_days` (per indicator, in
`cards/<rule>.yaml`), as long as the evidence behind it is unchanged. A critical card is never
quieted.

What is stored, and why it reveals nothing new about the patient:
- each audited card carries an *evidence digest*: an HMAC, with the audit trail's patient-hash
  key, of the finding's evidence (codes, values, units and dates of the records it cites, never
  the wording): equal digests mean the same evidence, and nothing can be read back from one;
- a quiet entry holds the patient hash of the audited card's invocation (the audit trail's
  keyed hash), the rule id, that card's digest and indicator, the days it runs and the reason.

Feedback may arrive before the audit row of its card is written (the audit writer batches, and
another instance may have served the card): the entry is then kept *pending* (card uuid, reason,
day) and matched to its card by the lookup of every later hook call, which joins pending entries
to the audit trail; whoever finds the card first fills the entry in (`resolve`).

The lookup is a database round trip (0.6 ms over loopback PostgreSQL), so a hook call makes it
only for a patient in this worker's `PatientIndex`: the patients with a running entry or with
an audited card a pending entry names, read by a background thread about once a second (and
added at once by the feedback this worker records). A lift takes effect at the next call (the
lookup itself reads the entry); a quieting recorded by another worker or instance within about
a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import orjson

from . import cards, metrics
from .chart import NoteFact
from .cooperative import off_hub
from .errors import StoreUnavailable
from .feedback import canonical_card
from .rules.base import Evidence, Finding
from .terminology import coding_list, concept_text

log = logging.getLogger("cds_service.quiet")

# Values an evidence label quotes that change with the calendar, not with the records.
_CALENDAR_VALUES = frozenset({"age"})


# --- the evidence digest -----------------------------------------------------------------


def evidence_fingerprint(finding: Finding) -> str:
    """A SHA-256 of the finding's evidence in a canonical form (never stored or logged as is:
    see `Quieting.digest`). Two calls with the same records give the same fingerprint;
    a new or changed record (a lower potassium, a later date) gives another."""
    reasons = sorted(finding.reasons)
    # orjson for every item and for the whole, checked once at the end (see _canonical_json):
    # an item that orjson writes otherwise than `json` (a character outside 0x20-0x7E) is
    # quoted as it is in the whole text, which the check then finds, and everything is written
    # again by `json`, so the sorting is redone on `json`'s texts too.
    try:
        items = sorted(
            [orjson.dumps(_item(e), option=orjson.OPT_SORT_KEYS).decode() for e in finding.evidence]
        )
        written = orjson.dumps([items, reasons])
    except TypeError:
        written = b"\x80"  # not plain ASCII: written by `json` below
    if not written.isascii() or b"\x7f" in written:
        items = sorted(map(_canonical, finding.evidence))
        written = _JSON_CANONICAL([items, reasons]).encode()
    return hashlib.sha256(written).hexdigest()


# The canonical form is `json.dumps(value, separators=(",", ":"), sort_keys=True)`, byte for
# byte: stored digests (quiet entries) were made from it, so it may never change. orjson writes
# the same bytes, three times faster, for what is digested here (strings, None, and lists and
# dicts of them, under ASCII keys; no floats, which the two write differently: `_item`
# writes a lab value as its repr) as long as its output is plain ASCII without DEL: `json`
# escapes every character outside 0x20-0x7E (ensure_ascii), orjson writes those as they are.
# Anything else (a non-ASCII name, a value orjson refuses) is written by `json` itself.
# tests/test_canonical_json.py holds the two writers to the same text over every character.
_JSON_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _canonical_json(value: object) -> str:
    try:
        written = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _JSON_CANONICAL(value)
    if written.isascii() and b"\x7f" not in written:
        return written.decode("ascii")
    return _JSON_CANONICAL(value)


# _codes and _item run for every piece of evidence of every card (eight a typical request):
# written as plain loops and branches, without the comprehensions' function frames (Python
# 3.11 makes one per comprehension): about half their time on the typical request.


def _codes(concept: object) -> list[str]:
    # The codings terminology.codings_of yields (a system and a non-empty code, both text),
    # read straight from the concept: no Coding object is needed for "system|code".
    codings = coding_list(concept)
    if len(codings) == 1:  # the usual record: one coding, nothing to sort
        coding = codings[0]
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and code:
                return [f"{system}|{code}"]
    else:
        codes = set()
        for coding in codings:
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str) and code:
                    codes.add(f"{system}|{code}")
        if codes:
            return sorted(codes)
    # A record without codes is known by its name (matched by name): its name is its identity.
    return [f"text|{concept_text(concept).strip().lower()}"]


def _item(evidence: Evidence) -> dict:
    """One piece of evidence as the digest reads it: codes, values, units and dates."""
    item: dict = {"label": evidence.label, "day": evidence.day}
    if evidence.values:
        values = {k: v for k, v in evidence.values if k not in _CALENDAR_VALUES}
        if values:
            item["values"] = values
    result = evidence.result
    if result is not None:
        item["lab"] = result.lab.value_set
        item["codes"] = _codes(result.fact.code)
        item["value"] = [repr(result.number), result.unit]
    elif evidence.match is not None:
        fact = evidence.match.fact
        item["codes"] = _codes(fact.code)
        if isinstance(fact, NoteFact):
            item["status"] = [fact.status, fact.side]
    else:  # each record it names (one, as the rules build evidence)
        if evidence.medication is not None:
            item["medication"] = _codes(evidence.medication.concept)
        if evidence.allergy is not None:
            item["allergy"] = _codes(evidence.allergy.concept)
        if evidence.order is not None:
            item["order"] = _codes(evidence.order.concept)
    if evidence.coding is not None:
        item["matched"] = f"{evidence.coding.system}|{evidence.coding.code}"
    return item


def _canonical(evidence: Evidence) -> str:
    """The evidence's canonical JSON text (the digest's items)."""
    return _canonical_json(_item(evidence))


# --- entries and the store ---------------------------------------------------------------


@dataclass(frozen=True)
class CardRecord:
    """What the audit trail knows of one card: whose (keyed hash), which rule, how severe,
    on what evidence."""

    card_uuid: str
    patient_hash: str | None
    rule_id: str
    indicator: str
    evidence_digest: str | None


@dataclass(frozen=True)
class QuietEntry:
    id: int
    card_uuid: str
    reason: str
    from_day: date
    # None while pending (the card's audit row had not been found yet).
    patient_hash: str | None = None
    rule_id: str | None = None
    indicator: str | None = None
    evidence_digest: str | None = None
    until: date | None = None
    lifted_at: str | None = None
    lifted_by: str | None = None

    @property
    def pending(self) -> bool:
        return self.patient_hash is None


class QuietStore(Protocol):
    """Where quiet entries live: beside the audit trail (it joins card rows), shared by every
    instance. Implemented in cds_service/stores/ for each engine."""

    def card(self, card_uuid: str) -> CardRecord | None:
        """The audited card of this uuid (its latest invocation), or None."""

    def add(self, entry: QuietEntry) -> bool:
        """Store an entry (pending or not), once per card uuid; whether it was new."""

    def for_patient(
        self, patient_hash: str, today: date
    ) -> tuple[list[QuietEntry], list[tuple[QuietEntry, CardRecord]]]:
        """One query: the patient's entries still running on `today` and not lifted, and the
        pending entries whose card the audit trail now links to this patient."""

    def resolve(self, entry_id: int, resolved: QuietEntry | None) -> None:
        """Fill a pending entry in from its card, or delete it (None: its card does not quiet)."""

    def pending(self) -> list[tuple[QuietEntry, CardRecord | None]]:
        """Every pending entry, with its card when the audit trail has it."""

    def entries(self, patient_hash: str | None = None, active_on: date | None = None) -> list:
        """Entries (of one patient; running on a day and not lifted), newest first."""

    def lift(self, entry_id: int, by: str, at: str) -> bool:
        """Stop an entry at once; whether it was running."""

    def purge_pending(self, before: date) -> int:
        """Delete pending entries received before a day (their card never reached the audit
        trail: feedback about a card we never issued)."""


def today(settings) -> date:
    """The service's day (UTC): CDS_FIXED_NOW's when pinned, as the cards' clock."""
    return (settings.fixed_now or datetime.now(UTC)).astimezone(UTC).date()


# --- the decisions -----------------------------------------------------------------------


# Pending entries kept at most (feedback about cards not audited yet, normally a handful for
# a fraction of a second); more are not recorded until older ones resolve or expire.
MAX_PENDING = 10_000


def _ours(card_uuid: str) -> bool:
    """Whether a uuid can name a card of ours: the service's card uuids are version 5."""
    try:
        return uuid_module.UUID(card_uuid).version == 5
    except ValueError:
        return False


def quiets(reason: dict | None) -> str | None:
    """The override reason's code when it quiets (ours, and a quieting code), else None."""
    if not isinstance(reason, dict):
        return None
    common = cards.content().common
    if reason.get("system") != common["override_reason_system"]:
        return None
    code = reason.get("code")
    return code if code in common["quieting_override_reasons"] else None


def fill(entry: QuietEntry, record: CardRecord) -> QuietEntry | None:
    """The entry of a quieting override on this audited card, or None when the card does not
    quiet (critical, a rule or indicator without quiet_days, no patient, no digest)."""
    days = cards.quiet_days(record.rule_id, record.indicator)
    if days is None or record.patient_hash is None or record.evidence_digest is None:
        return None
    return QuietEntry(
        id=entry.id,
        card_uuid=entry.card_uuid,
        reason=entry.reason,
        from_day=entry.from_day,
        patient_hash=record.patient_hash,
        rule_id=record.rule_id,
        indicator=record.indicator,
        evidence_digest=record.evidence_digest,
        until=entry.from_day + timedelta(days=days),
        lifted_at=entry.lifted_at,
        lifted_by=entry.lifted_by,
    )


def holds(entry: QuietEntry, rule_id: str, indicator: str, digest: str, today: date) -> bool:
    """Whether this entry quiets a card of `rule_id` and `indicator` on `digest` today.

    Never a critical card; never on other evidence; the period follows both the indicator
    that was overridden (its `until`) and the indicator now (a warning overridden then shown
    as info runs 7 days, an info card that became a warning runs the warning's 7 days), both
    from the day of the override, that day and `until` included."""
    if indicator == "critical" or entry.until is None or entry.lifted_at is not None:
        return False
    if entry.rule_id != rule_id or entry.evidence_digest != digest:
        return False
    days_now = cards.quiet_days(rule_id, indicator)
    if days_now is None:
        return False
    last = min(entry.until, entry.from_day + timedelta(days=days_now))
    return entry.from_day <= today <= last


@dataclass(frozen=True)
class Shown:
    """The cards to answer with, and what the audit trail keeps of every card: (uuid, rule id,
    indicator, evidence digest, quieted)."""

    cards: list[dict]
    audited: list[tuple[str, str, str, str, bool]]
    quieted: list[tuple[dict, QuietEntry]]


# How often each worker reads the patients it must look up (PatientIndex).
INDEX_REFRESH_S = 1.0


class PatientIndex:
    """The patient hashes whose hook calls need the store's lookup, kept per worker.

    Read by a daemon thread (a greenlet under gevent, SQLite's read in the hub's thread pool)
    every `refresh_s`, started at the first hook call (after gunicorn forks). Until the first
    read succeeds every patient is looked up, as without the index; a failed read keeps the
    last set (its patients are still looked up, and the lookup sees lifts at once)."""

    def __init__(self, store, refresh_s: float = INDEX_REFRESH_S):
        self._store = store
        self._refresh_s = refresh_s
        self._patients: set[str] | None = None
        self._added: dict[str, float] = {}  # local additions, kept across a read under way
        self._today: date | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False

    def may_quiet(self, patient_hash: str, today: date) -> bool:
        self._today = today
        if self._thread is None:
            self._start()
        patients = self._patients
        return patients is None or patient_hash in patients

    def add(self, patient_hash: str) -> None:
        """A patient this worker just recorded an entry for: looked up from the next call."""
        with self._lock:
            self._added[patient_hash] = time.monotonic()
            if self._patients is not None:
                self._patients = self._patients | {patient_hash}

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="quiet-index", daemon=True)
        self._refresh()  # the first read on the calling request: a fresh worker knows at once
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._refresh_s)
            self._refresh()

    def _refresh(self) -> None:
        today = self._today
        if today is None:
            return
        started = time.monotonic()
        try:
            read = self._store.quieted_patients
            if getattr(self._store, "blocking", False):
                patients = off_hub(read, today)
            else:
                patients = read(today)
        except Exception as error:  # StoreUnavailable or a defect: keep the last set
            if not self._failing:
                event = {"event": "quiet_index_failed", "error": type(error).__name__}
                log.warning(json.dumps(event))
            self._failing = True
            return
        self._failing = False
        with self._lock:
            # Additions made while this read ran may be missing from it: kept a while longer.
            keep = started - 2 * self._refresh_s
            self._added = {p: t for p, t in self._added.items() if t >= keep}
            self._patients = patients | self._added.keys()


class Quieting:
    """The service's use of quiet entries: filter a response, record feedback, list, lift.

    With `index` (the served app: a PatientIndex), a hook call looks up only the patients it
    names; without (the CLI, the decision tests), every candidate call is looked up."""

    def __init__(self, store: QuietStore, hasher, index: PatientIndex | None = None):
        self.store = store
        self._hasher = hasher  # the audit trail's PatientHasher (HMAC with its key)
        self._index = index

    def digest(self, fingerprint: str) -> str:
        """The keyed evidence digest stored with the card's audit row (domain-separated from
        patient hashes by its prefix, which no patient id carries)."""
        return self._hasher("\x00evidence\x00" + fingerprint)

    def apply(
        self,
        patient_hash: str | None,
        response_cards: Sequence[dict],
        fingerprints: Sequence[str],
        today: date,
    ) -> Shown:
        """Drop each non-critical card the patient's running entries quiet. One store query,
        and only when there is a non-critical card of a rule that quiets."""
        digests = [self.digest(f) for f in fingerprints]
        keyed = [
            (card, card["source"]["topic"]["code"], card["indicator"], digest)
            for card, digest in zip(response_cards, digests, strict=True)
        ]
        candidates = [k for k in keyed if cards.quiet_days(k[1], k[2]) is not None]
        entries: list[QuietEntry] = []
        if (
            patient_hash
            and candidates
            and (self._index is None or self._index.may_quiet(patient_hash, today))
        ):
            try:
                entries = self._entries(patient_hash, today)
            except Exception as exc:  # any store failure: show every card (never hide one)
                if not isinstance(exc, StoreUnavailable):  # (that one is counted already)
                    metrics.store_error("quiet")
                log.warning(json.dumps({"event": "quiet_unavailable", "error": type(exc).__name__}))
        shown, quieted, audited = [], [], []
        for card, rule_id, indicator, digest in keyed:
            entry = next((e for e in entries if holds(e, rule_id, indicator, digest, today)), None)
            if entry is None:
                shown.append(card)
            else:
                quieted.append((card, entry))
            audited.append((card["uuid"], rule_id, indicator, digest, entry is not None))
        return Shown(shown, audited, quieted)

    def _entries(self, patient_hash: str, today: date) -> list[QuietEntry]:
        running, found = self.store.for_patient(patient_hash, today)
        for pending, record in found:  # feedback that came before its card's audit row
            entry = fill(pending, record)
            self.store.resolve(pending.id, entry)
            if entry is not None and entry.until is not None and entry.until >= today:
                running.append(entry)
        return running

    def on_feedback(
        self, items: Iterable[dict], today: date, flush: Callable[[], None] | None = None
    ) -> int:
        """Record a quiet entry for each quieting override; the number of new entries (pending
        ones included). Items have passed the feedback schema. `flush` writes this process's
        queued audit rows first (the card was most likely served here moments ago), and only
        those: never the spool's backlog, which is the audit writer's.
        StoreUnavailable when the database does not answer (the feedback is sent again)."""
        overrides = []
        for item in items:
            code = quiets((item.get("overrideReason") or {}).get("reason"))
            if item.get("outcome") == "overridden" and code is not None:
                overrides.append((canonical_card(item["card"]), code))
        if not overrides:
            return 0
        if flush is not None:
            flush()
        added = 0
        waiting = None
        for uuid, code in overrides:
            pending = QuietEntry(id=0, card_uuid=uuid, reason=code, from_day=today)
            record = self.store.card(uuid)
            if record is None:
                # Not audited (yet): kept pending, if it can be a card of ours (a version-5
                # uuid) and the pending entries are not more than a bound (bogus feedback
                # must not grow what every hook call joins).
                if waiting is None:
                    waiting = len(self.store.pending())
                if _ours(uuid) and waiting < MAX_PENDING:
                    new = self.store.add(pending)
                    added += new
                    waiting += new
                elif waiting >= MAX_PENDING:
                    log.warning(json.dumps({"event": "quiet_pending_full"}))
                continue
            entry = fill(pending, record)
            if entry is not None:
                added += self.store.add(entry)
                if self._index is not None and entry.patient_hash is not None:
                    self._index.add(entry.patient_hash)
        self.settle(today)
        return added

    def listed(self, patient_hash: str, today: date) -> list[QuietEntry]:
        """The patient's entries running today (pending ones filled in first)."""
        self._entries(patient_hash, today)
        return self.store.entries(patient_hash, active_on=today)

    def lift(self, entry_id: int, by: str) -> bool:
        """Stop an entry at once, on every instance; whether it was running."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        return self.store.lift(entry_id, by, at)

    def settle(self, today: date, keep_days: int = 2) -> None:
        """Fill in every pending entry whose card is audited by now, and forget those older
        than `keep_days` whose card never was."""
        for pending, record in self.store.pending():
            if record is not None:
                entry = fill(pending, record)
                self.store.resolve(pending.id, entry)
                if self._index is not None and entry is not None and entry.patient_hash:
                    self._index.add(entry.patient_hash)
        self.store.purge_pending(today - timedelta(days=keep_days))
