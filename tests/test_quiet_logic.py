"""Quieting repeated cards: the decisions, on an in-memory fake store (the HTTP tests against
real stores are in tests/test_quiet.py). Only what a store cannot change is tested here: which
entry quiets which card on which day, what changes the evidence digest, the card content."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import date, timedelta

import pytest

from cds_service import cards, quiet, terminology
from cds_service.console.catalog import code_uses
from cds_service.errors import ConfigurationError, StoreUnavailable
from cds_service.quiet import CardRecord, PatientIndex, QuietEntry, Quieting, holds
from cds_service.rules.base import REGISTRY, Evidence, Finding

DAY0 = date(2026, 11, 20)
SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"
# Card uuids as the service makes them (version 5, from the hook instance and the rule id).
U1, U2, U3, U4 = (str(uuid.uuid5(cards.CARD_NAMESPACE, f"hook/{n}")) for n in range(4))


def entry(rule_id="cramp-labs-missing", indicator="info", digest="d1", **changes) -> QuietEntry:
    days = cards.quiet_days(rule_id, indicator)
    base = QuietEntry(
        id=1,
        card_uuid="c1",
        reason="already-addressed",
        from_day=DAY0,
        patient_hash="p1",
        rule_id=rule_id,
        indicator=indicator,
        evidence_digest=digest,
        until=DAY0 + timedelta(days=days),
    )
    return dataclasses.replace(base, **changes)


# --- the period --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_id", "indicator", "days"),
    [("cramp-labs-missing", "info", 30), ("electrolyte-cramp-cause", "warning", 7)],
)
def test_an_entry_holds_through_its_last_day_and_not_the_day_after(rule_id, indicator, days):
    held = entry(rule_id, indicator)
    assert holds(held, rule_id, indicator, "d1", DAY0)
    assert holds(held, rule_id, indicator, "d1", DAY0 + timedelta(days=days - 1))
    assert holds(held, rule_id, indicator, "d1", DAY0 + timedelta(days=days))
    assert not holds(held, rule_id, indicator, "d1", DAY0 + timedelta(days=days + 1))
    assert not holds(held, rule_id, indicator, "d1", DAY0 - timedelta(days=1))


def test_other_evidence_another_rule_or_a_lifted_entry_never_quiet():
    held = entry()
    assert not holds(held, "cramp-labs-missing", "info", "d2", DAY0)
    assert not holds(held, "medication-cramp-cause", "info", "d1", DAY0)
    lifted = dataclasses.replace(held, lifted_at="2026-11-20T13:00:00Z")
    assert not holds(lifted, "cramp-labs-missing", "info", "d1", DAY0)


def test_a_critical_card_is_never_quieted_whatever_the_entry_says():
    # motor-deficit is a warning, critical when bilateral: an entry from its warning card
    # never quiets its critical card, even with the same digest.
    held = entry("motor-deficit-red-flag", "warning")
    assert holds(held, "motor-deficit-red-flag", "warning", "d1", DAY0)
    assert not holds(held, "motor-deficit-red-flag", "critical", "d1", DAY0)
    forged = dataclasses.replace(held, indicator="critical", until=DAY0 + timedelta(days=365))
    assert not holds(forged, "motor-deficit-red-flag", "critical", "d1", DAY0)


def test_the_period_follows_the_indicator_overridden_and_the_one_now():
    # association: info (30 days) or warning (7 days). Overridden as info, shown now as a
    # warning: quiet for the warning's 7 days only; and the other way round, 7 days too.
    rule = "cramp-sciatica-association"
    as_info = entry(rule, "info")
    assert holds(as_info, rule, "info", "d1", DAY0 + timedelta(days=30))
    assert holds(as_info, rule, "warning", "d1", DAY0 + timedelta(days=7))
    assert not holds(as_info, rule, "warning", "d1", DAY0 + timedelta(days=8))
    as_warning = entry(rule, "warning")
    assert holds(as_warning, rule, "info", "d1", DAY0 + timedelta(days=7))
    assert not holds(as_warning, rule, "info", "d1", DAY0 + timedelta(days=8))


# --- the content -------------------------------------------------------------------------


def test_quiet_days_name_exactly_the_non_critical_indicators_each_rule_emits():
    names = frozenset(terminology.load().value_sets)
    for registered in REGISTRY:
        emitted = set(code_uses((registered.evaluate,), names, registered.rule_id).indicators)
        days = cards.content().cards[registered.rule_id].get("quiet_days") or {}
        assert set(days) == emitted - {"critical"}, registered.rule_id
        for indicator, count in days.items():
            assert count == {"info": 30, "warning": 7}[indicator], registered.rule_id
    assert "quiet_days" not in cards.content().cards["cauda-equina-red-flag"]


@pytest.mark.parametrize(
    "value",
    [{"critical": 7}, {"warning": 0}, {"info": 366}, {"info": "30"}, {"info": True}, [7], {}],
    ids=["critical", "zero", "over-a-year", "text", "bool", "list", "empty"],
)
def test_the_loader_refuses_quiet_days_it_cannot_honour(value):
    with pytest.raises(ConfigurationError, match="quiet_days"):
        cards._check_quiet_days("x.yaml", value)
    cards._check_quiet_days("x.yaml", {"info": 1, "warning": 365})  # the bounds themselves


def test_only_our_already_addressed_and_patient_declined_quiet():
    assert quiet.quiets({"system": SYSTEM, "code": "already-addressed"}) == "already-addressed"
    assert quiet.quiets({"system": SYSTEM, "code": "patient-declined"}) == "patient-declined"
    assert quiet.quiets({"system": SYSTEM, "code": "not-applicable"}) is None
    assert quiet.quiets({"system": "https://other.example/cs", "code": "already-addressed"}) is None
    assert quiet.quiets(None) is None


# --- the evidence fingerprint ------------------------------------------------------------


def test_the_fingerprint_follows_the_records_not_the_calendar():
    age = Finding("info", (Evidence("age-65", values=(("age", "66"),)),), reasons=("age-65",))
    older = Finding("info", (Evidence("age-65", values=(("age", "67"),)),), reasons=("age-65",))
    assert quiet.evidence_fingerprint(age) == quiet.evidence_fingerprint(older)
    other = Finding("info", (Evidence("egfr-30-59"),), reasons=("egfr-30-59",))
    assert quiet.evidence_fingerprint(age) != quiet.evidence_fingerprint(other)


# --- the filter, on a fake store ---------------------------------------------------------


class FakeStore:
    """In memory, for these decisions only; counts the lookups a hook call makes."""

    def __init__(self):
        self.rows: dict[int, QuietEntry] = {}
        self.cards: dict[str, CardRecord] = {}
        self.lookups = 0

    def card(self, card_uuid):
        return self.cards.get(card_uuid)

    def add(self, entry):
        if any(e.card_uuid == entry.card_uuid for e in self.rows.values()):
            return False
        new_id = len(self.rows) + 1
        self.rows[new_id] = dataclasses.replace(entry, id=new_id)
        return True

    def for_patient(self, patient_hash, today):
        self.lookups += 1
        running = [
            e
            for e in self.rows.values()
            if e.patient_hash == patient_hash and e.until >= today and e.lifted_at is None
        ]
        found = [
            (e, self.cards[e.card_uuid])
            for e in self.rows.values()
            if e.pending
            and e.card_uuid in self.cards
            and self.cards[e.card_uuid].patient_hash == patient_hash
        ]
        return running, found

    def pending(self):
        return [(e, self.cards.get(e.card_uuid)) for e in self.rows.values() if e.pending]

    def purge_pending(self, before):
        old = [i for i, e in self.rows.items() if e.pending and e.from_day < before]
        for i in old:
            del self.rows[i]
        return len(old)

    def resolve(self, entry_id, resolved):
        if resolved is None:
            del self.rows[entry_id]
        else:
            self.rows[entry_id] = resolved


def hasher(text: str) -> str:
    return "h:" + text


def card(rule_id: str, indicator: str, uuid: str) -> dict:
    return {"uuid": uuid, "indicator": indicator, "source": {"topic": {"code": rule_id}}}


def overridden(uuid: str, code: str = "already-addressed") -> dict:
    return {
        "card": f"urn:uuid:{uuid.upper()}",
        "outcome": "overridden",
        "overrideReason": {"reason": {"system": SYSTEM, "code": code}},
    }


def test_a_quieting_override_drops_the_card_for_that_patient_only():
    store = FakeStore()
    quieting = Quieting(store, hasher)
    digest = quieting.digest("f1")
    store.cards[U1] = CardRecord(U1, "p1", "cramp-labs-missing", "info", digest)
    assert quieting.on_feedback([overridden(U1, "not-applicable")], DAY0) == 0
    assert quieting.on_feedback([overridden(U1)], DAY0) == 1
    assert quieting.on_feedback([overridden(U1)], DAY0) == 0  # once per card
    shown = quieting.apply("p1", [card("cramp-labs-missing", "info", U2)], ["f1"], DAY0)
    assert shown.cards == [] and [a[4] for a in shown.audited] == [True]
    other = quieting.apply("p2", [card("cramp-labs-missing", "info", U3)], ["f1"], DAY0)
    assert len(other.cards) == 1 and other.audited[0][4] is False
    changed = quieting.apply("p1", [card("cramp-labs-missing", "info", U4)], ["f2"], DAY0)
    assert len(changed.cards) == 1


def test_no_lookup_without_a_card_that_could_be_quieted():
    store = FakeStore()
    quieting = Quieting(store, hasher)
    quieting.apply("p1", [card("cauda-equina-red-flag", "critical", U1)], ["f"], DAY0)
    quieting.apply("p1", [], [], DAY0)
    quieting.apply(None, [card("cramp-labs-missing", "info", U1)], ["f"], DAY0)
    assert store.lookups == 0
    quieting.apply("p1", [card("cramp-labs-missing", "info", U1)], ["f"], DAY0)
    assert store.lookups == 1


def test_feedback_before_its_card_is_audited_waits_and_then_quiets():
    store = FakeStore()
    quieting = Quieting(store, hasher)
    assert quieting.on_feedback([overridden(U1)], DAY0) == 1
    assert next(iter(store.rows.values())).pending
    # The card's audit row lands (another instance's writer): the next call finds it.
    store.cards[U1] = CardRecord(U1, "p1", "cramp-labs-missing", "info", quieting.digest("f"))
    later = DAY0 + timedelta(days=1)
    shown = quieting.apply("p1", [card("cramp-labs-missing", "info", U2)], ["f"], later)
    assert shown.cards == []
    resolved = next(iter(store.rows.values()))
    assert not resolved.pending and resolved.until == DAY0 + timedelta(days=30)


def test_a_pending_override_of_a_critical_card_is_dropped_when_its_card_is_found():
    store = FakeStore()
    quieting = Quieting(store, hasher)
    quieting.on_feedback([overridden(U1)], DAY0)
    store.cards[U1] = CardRecord(U1, "p1", "cauda-equina-red-flag", "critical", "d")
    quieting.apply("p1", [card("cramp-labs-missing", "info", U2)], ["f"], DAY0)
    assert store.rows == {}


def test_pending_entries_only_for_uuids_that_can_be_ours_and_only_up_to_a_bound(monkeypatch):
    store = FakeStore()
    quieting = Quieting(store, hasher)
    assert quieting.on_feedback([overridden(str(uuid.uuid4()))], DAY0) == 0  # not version 5
    monkeypatch.setattr(quiet, "MAX_PENDING", 2)
    assert quieting.on_feedback([overridden(U1), overridden(U2), overridden(U3)], DAY0) == 2
    assert len(store.rows) == 2


def test_pending_entries_whose_card_never_comes_are_forgotten_after_two_days():
    store = FakeStore()
    quieting = Quieting(store, hasher)
    quieting.on_feedback([overridden(U1)], DAY0)
    quieting.settle(DAY0 + timedelta(days=2))
    assert len(store.rows) == 1
    quieting.settle(DAY0 + timedelta(days=3))
    assert store.rows == {}


# --- the per-worker index of patients to look up -----------------------------------------


class IndexedStore(FakeStore):
    """The fake store with the background read of the patients a hook call must look up."""

    def quieted_patients(self, today):
        running = {
            e.patient_hash
            for e in self.rows.values()
            if e.patient_hash and e.until >= today and e.lifted_at is None
        }
        found = {
            self.cards[e.card_uuid].patient_hash
            for e in self.rows.values()
            if e.pending and e.card_uuid in self.cards
        }
        return running | found


def eventually(check, seconds: float = 10):
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_the_index_looks_up_only_its_patients_and_learns_other_workers_entries():
    store = IndexedStore()
    here = Quieting(store, hasher, PatientIndex(store, refresh_s=0.05))
    there = Quieting(store, hasher, PatientIndex(store, refresh_s=0.05))  # another worker
    digest = here.digest("f1")
    store.cards[U1] = CardRecord(U1, "p1", "cramp-labs-missing", "info", digest)
    assert len(here.apply("p1", [card("cramp-labs-missing", "info", U2)], ["f1"], DAY0).cards) == 1
    assert store.lookups == 0  # no entry for anyone: no lookup

    assert there.on_feedback([overridden(U1)], DAY0) == 1
    # The worker that recorded it quiets at once; the other within its refresh.
    assert there.apply("p1", [card("cramp-labs-missing", "info", U3)], ["f1"], DAY0).cards == []
    assert eventually(
        lambda: here.apply("p1", [card("cramp-labs-missing", "info", U4)], ["f1"], DAY0).cards == []
    )
    lookups = store.lookups
    here.apply("p2", [card("cramp-labs-missing", "info", U4)], ["f1"], DAY0)
    assert store.lookups == lookups  # another patient: still no lookup


def test_the_index_finds_the_patient_of_a_pending_entry_once_its_card_is_audited():
    store = IndexedStore()
    quieting = Quieting(store, hasher, PatientIndex(store, refresh_s=0.05))
    assert quieting.apply("p1", [card("cramp-labs-missing", "info", U2)], ["f"], DAY0).cards
    assert quieting.on_feedback([overridden(U1)], DAY0) == 1  # pending: its card not audited
    store.cards[U1] = CardRecord(U1, "p1", "cramp-labs-missing", "info", quieting.digest("f"))
    assert eventually(
        lambda: (
            quieting.apply("p1", [card("cramp-labs-missing", "info", U3)], ["f"], DAY0).cards == []
        )
    )
    assert not next(iter(store.rows.values())).pending  # filled in by the hook call's lookup


def test_until_the_index_is_read_every_patient_is_looked_up():
    class Down(IndexedStore):
        def quieted_patients(self, today):
            raise StoreUnavailable("down")

    store = Down()
    quieting = Quieting(store, hasher, PatientIndex(store, refresh_s=60))
    quieting.apply("p1", [card("cramp-labs-missing", "info", U1)], ["f"], DAY0)
    assert store.lookups == 1
