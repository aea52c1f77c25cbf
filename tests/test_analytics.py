"""Feedback analytics queries, over the stores the service writes: the embedded SQLite files
and a real PostgreSQL database (each test runs on both engines)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from servers import store_settings

from cds_service.analytics import UNKNOWN_CARD, Period
from cds_service.rules import RULE_IDS
from cds_service.settings import Settings
from cds_service.stores import EmbeddedAnalytics, open_stores

SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"
TODAY = datetime.now(UTC).date()
THIS_MONTH = Period(TODAY - timedelta(days=29), TODAY)


class Stores:
    """The audit and feedback stores of one data directory, as the service keeps them."""

    def __init__(self, settings: Settings):
        self.stores = open_stores(settings, replay=False, writer=False)
        self.audit = self.stores.audit
        self.feedback = self.stores.feedback

    def shown(self, cards: list[tuple[str, str]], when: datetime | None = None) -> list[str]:
        """Record one invocation that showed `(rule id, indicator)` cards; their uuids."""
        when = when or datetime.now(UTC)
        uuids = [str(uuid.uuid4()) for _ in cards]
        entry = {
            "time": when.isoformat(timespec="milliseconds"),
            "service_id": "cramp-sciatica-patient-view",
            "hook": "patient-view",
            "hook_instance": str(uuid.uuid4()),
            "status": 200,
            "ms": 5.0,
            "patient": "0123456789abcdef0123",
            "rule_ids": [rule for rule, _ in cards],
        }
        self.audit.record(entry, [(u, r, i) for u, (r, i) in zip(uuids, cards, strict=True)])
        return uuids

    def accepted(self, card: str, suggestion: str = "s1") -> None:
        self.feedback.add(
            "cramp-sciatica-patient-view",
            [
                {
                    "card": card,
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": suggestion}],
                    "outcomeTimestamp": datetime.now(UTC).isoformat(),
                }
            ],
        )

    def overridden(self, card: str, code: str | None = None) -> None:
        item = {
            "card": card,
            "outcome": "overridden",
            "outcomeTimestamp": datetime.now(UTC).isoformat(),
        }
        if code:
            item["overrideReason"] = {"reason": {"system": SYSTEM, "code": code}}
        self.feedback.add("cramp-sciatica-patient-view", [item])

    def activity(self, period: Period = THIS_MONTH, rule_ids=RULE_IDS):
        self.audit.flush()  # rows are queued for the writer thread: write them now
        rows = self.stores.analytics.rule_activity(period, rule_ids)
        return {row.rule_id: row for row in rows}, [row.rule_id for row in rows]


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    with store_settings(request.param, tmp_path) as settings:
        opened = Stores(settings)
        yield opened
        opened.stores.close()


def test_empty_stores_list_every_rule_in_catalog_order_with_zeros(stores):
    rows, order = stores.activity()
    assert order == list(RULE_IDS)
    assert all(
        (r.fired, r.accepted, r.overridden, r.reasons) == (0, 0, 0, {}) for r in rows.values()
    )


def test_fired_counts_each_card_shown_by_rule_and_indicator(stores):
    stores.shown([("cauda-equina-red-flag", "critical"), ("cramp-labs-missing", "info")])
    stores.shown([("cauda-equina-red-flag", "critical")])
    stores.shown([("motor-deficit-red-flag", "warning")])
    stores.shown([("motor-deficit-red-flag", "critical")])
    rows, _ = stores.activity()
    assert rows["cauda-equina-red-flag"].fired == 2
    assert rows["cauda-equina-red-flag"].indicators == {"critical": 2}
    assert rows["cramp-labs-missing"].fired == 1
    assert rows["motor-deficit-red-flag"].fired == 2
    assert rows["motor-deficit-red-flag"].indicators == {"warning": 1, "critical": 1}
    assert rows["quinine-caution"].fired == 0


def test_feedback_is_joined_to_its_rule_through_the_card_uuid(stores):
    [cauda, labs] = stores.shown(
        [("cauda-equina-red-flag", "critical"), ("cramp-labs-missing", "info")]
    )
    [imaging] = stores.shown([("imaging-stewardship", "warning")])
    stores.accepted(cauda)
    stores.accepted(f"urn:uuid:{labs}")  # the prefixed form names the same card
    stores.overridden(imaging, "already-addressed")
    stores.overridden(imaging, "intervention-candidate")
    stores.overridden(cauda, "not-applicable")
    rows, _ = stores.activity()
    assert (rows["cauda-equina-red-flag"].accepted, rows["cauda-equina-red-flag"].overridden) == (
        1,
        1,
    )
    assert rows["cramp-labs-missing"].accepted == 1
    imaging_row = rows["imaging-stewardship"]
    assert (imaging_row.fired, imaging_row.accepted, imaging_row.overridden) == (1, 0, 2)
    assert imaging_row.reasons == {
        (SYSTEM, "already-addressed"): 1,
        (SYSTEM, "intervention-candidate"): 1,
    }
    assert rows["cauda-equina-red-flag"].reasons == {(SYSTEM, "not-applicable"): 1}


def test_an_override_without_a_reason_is_counted_as_such(stores):
    [card] = stores.shown([("medication-cramp-cause", "info")])
    stores.overridden(card)
    rows, _ = stores.activity()
    assert rows["medication-cramp-cause"].overridden == 1
    assert rows["medication-cramp-cause"].reasons == {(None, None): 1}


def test_a_card_shown_again_by_a_repeated_hook_instance_counts_its_feedback_once(stores):
    """Card uuids derive from the hook instance: an EHR that repeats one shows the same uuid
    in two invocations. Both showings count as fired; the one outcome counts once."""
    card = str(uuid.uuid4())
    for _ in range(2):
        stores.audit.record(
            {"time": datetime.now(UTC).isoformat(), "status": 200, "ms": 1.0},
            [(card, "quinine-caution", "warning")],
        )
    stores.overridden(card, "patient-declined")
    rows, _ = stores.activity()
    assert rows["quinine-caution"].fired == 2
    assert rows["quinine-caution"].overridden == 1


def test_feedback_about_a_card_never_audited_is_listed_last_as_unknown(stores):
    stores.shown([("quinine-caution", "warning")])
    stores.accepted(str(uuid.uuid4()))
    rows, order = stores.activity()
    assert order[-1] == UNKNOWN_CARD
    assert rows[UNKNOWN_CARD].accepted == 1
    assert rows[UNKNOWN_CARD].fired == 0


def test_a_rule_id_outside_the_catalog_follows_the_catalog_rules(stores):
    """A retired rule's cards still in the audit trail are counted, after the current rules."""
    stores.shown([("retired-rule", "info")])
    rows, order = stores.activity()
    assert order[: len(RULE_IDS)] == list(RULE_IDS)
    assert order[len(RULE_IDS)] == "retired-rule"
    assert rows["retired-rule"].fired == 1


def test_the_period_bounds_whole_utc_days_both_ends_included(stores):
    day = date(2026, 3, 10)
    start_of_day = datetime(2026, 3, 10, 0, 0, 0, tzinfo=UTC)
    stores.shown([("day-before", "info")], start_of_day - timedelta(milliseconds=1))
    stores.shown([("first-day", "info")], start_of_day)
    stores.shown([("last-day", "info")], start_of_day + timedelta(days=2, hours=23, minutes=59))
    stores.shown([("day-after", "info")], start_of_day + timedelta(days=3))
    _, order = stores.activity(Period(day, day + timedelta(days=2)), rule_ids=())
    assert order == ["first-day", "last-day"]


def test_feedback_counts_on_the_day_the_service_received_it(stores):
    """An outcome received today is outside a period that ended yesterday, even for a card
    shown within it."""
    last_week = datetime.now(UTC) - timedelta(days=7)
    [card] = stores.shown([("nsaid-caution", "warning")], last_week)
    stores.overridden(card, "already-addressed")
    until_yesterday = Period(TODAY - timedelta(days=10), TODAY - timedelta(days=1))
    rows, _ = stores.activity(until_yesterday)
    assert (rows["nsaid-caution"].fired, rows["nsaid-caution"].overridden) == (1, 0)
    rows, _ = stores.activity(Period(TODAY, TODAY))
    assert (rows["nsaid-caution"].fired, rows["nsaid-caution"].overridden) == (0, 1)


def test_no_patient_identifier_is_returned(stores):
    [card] = stores.shown([("cauda-equina-red-flag", "critical")])
    stores.accepted(card)
    rows, _ = stores.activity()
    text = repr(list(rows.values()))
    assert "0123456789abcdef0123" not in text  # the audit row's patient hash
    assert card not in text


def test_missing_store_files_mean_no_activity_and_are_not_created(tmp_path):
    audit, feedback = tmp_path / "audit.sqlite3", tmp_path / "feedback.sqlite3"
    rows = EmbeddedAnalytics(audit, feedback).rule_activity(THIS_MONTH, RULE_IDS)
    assert [r.rule_id for r in rows] == list(RULE_IDS)
    assert not audit.exists() and not feedback.exists()


def test_feedback_without_an_audit_trail_is_all_unknown(stores):
    stores.feedback.add(
        "cramp-sciatica-order-sign",
        [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-20"}],
    )
    rows, order = stores.activity(rule_ids=())
    assert [(r, rows[r].overridden) for r in order] == [(UNKNOWN_CARD, 1)]


def test_a_period_cannot_end_before_it_starts():
    with pytest.raises(ValueError):
        Period(date(2026, 11, 20), date(2026, 11, 19))


def test_the_stores_are_read_without_being_locked_or_changed(stores):
    """Analytics open the files read-only: the service keeps writing while they are read."""
    [card] = stores.shown([("quinine-caution", "warning")])
    stores.activity()
    stores.overridden(card, "already-addressed")  # the writer is not blocked
    stores.shown([("quinine-caution", "warning")])
    rows, _ = stores.activity()
    assert (rows["quinine-caution"].fired, rows["quinine-caution"].overridden) == (2, 1)
