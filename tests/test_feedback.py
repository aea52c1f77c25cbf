"""Feedback: what a clinician did with a card reaches the SQLite store once, and stays there."""

from __future__ import annotations

import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import CdsClient, load_scenario, outcome_fields
from servers import start_service, stop

PV = "cramp-sciatica-patient-view"
OVERRIDE_SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"


def fresh_card(client) -> str:
    """The uuid of a card the service has just shown, for an invocation and a patient of its
    own (an already-addressed override quiets the rule's card for its patient: issue 16)."""
    request, expected = load_scenario("cramps-only")
    request = json.loads(json.dumps(request).replace("cramps-only", f"cramps-{uuid.uuid4()}"))
    request["hookInstance"] = str(uuid.uuid4())
    response = client.call(expected["service"], request)
    assert response.status_code == 200
    return response.json()["cards"][0]["uuid"]


def overridden(card: str, timestamp: str = "2026-11-20T12:05:00Z", **extra) -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": timestamp, **extra}


def stored(db_path: Path, card: str) -> list[dict]:
    """The rows stored about `card`, read as an operator would: read-only, beside the service."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM feedback WHERE card_uuid = ? ORDER BY outcome_timestamp",
            (card.removeprefix("urn:uuid:"),),
        ).fetchall()
    return [dict(row) for row in rows]


@pytest.fixture
def db(service) -> Path:
    return service.data_dir / "feedback.sqlite3"


def test_wrapped_feedback_is_stored(client, db):
    card = fresh_card(client)
    response = client.feedback(PV, {"feedback": [overridden(card)]})
    assert response.status_code == 200
    assert response.json() == {"received": 1, "stored": 1}
    [row] = stored(db, card)
    assert row["service_id"] == PV
    assert row["outcome"] == "overridden"
    assert row["outcome_timestamp"] == "2026-11-20T12:05:00Z"


def test_a_single_unwrapped_feedback_object_is_stored(client, db):
    card = fresh_card(client)
    response = client.feedback(PV, overridden(card))
    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert [row["outcome"] for row in stored(db, card)] == ["overridden"]


def test_accepted_feedback_stores_the_accepted_suggestions(client, db):
    card = fresh_card(client)
    item = {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "s-2"}, {"id": "s-1"}],
        "outcomeTimestamp": "2026-11-20T12:05:00Z",
    }
    assert client.feedback(PV, {"feedback": [item]}).status_code == 200
    [row] = stored(db, card)
    assert row["outcome"] == "accepted"
    assert set(json.loads(row["accepted_suggestions"])) == {"s-1", "s-2"}


@pytest.mark.parametrize(
    ("timestamp", "canonical"),
    [
        ("2026-11-20", "2026-11-20"),
        ("2026-11-20T12:05:00Z", "2026-11-20T12:05:00Z"),
        ("2026-11-20T13:05:00.250+01:00", "2026-11-20T12:05:00.25Z"),
    ],
    ids=["date-only", "rfc3339-utc", "rfc3339-offset-fraction"],
)
def test_date_only_and_rfc3339_timestamps_are_accepted(client, db, timestamp, canonical):
    """Stored in one spelling per instant (UTC, no trailing zeros: issue 13)."""
    card = fresh_card(client)
    response = client.feedback(PV, {"feedback": [overridden(card, timestamp)]})
    assert response.status_code == 200, response.text
    assert [row["outcome_timestamp"] for row in stored(db, card)] == [canonical]


def test_the_same_feedback_sent_twice_is_stored_once(client, db):
    card = fresh_card(client)
    body = {"feedback": [overridden(card)]}
    assert client.feedback(PV, body).json()["stored"] == 1
    again = client.feedback(PV, body)
    assert again.status_code == 200
    assert again.json() == {"received": 1, "stored": 0}
    assert len(stored(db, card)) == 1


def test_the_same_feedback_sent_concurrently_is_stored_once(client, db):
    # The service runs several gunicorn workers: the retries land in different processes.
    card = fresh_card(client)
    url = f"{client.base_url}/cds-services/{PV}/feedback"

    def send(_):
        return requests.post(url, json=overridden(card), timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(16)))
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["stored"] for r in responses) == 1
    assert len(stored(db, card)) == 1


def test_distinct_outcomes_for_one_card_are_each_stored(client, db):
    card = fresh_card(client)
    first = overridden(card, "2026-11-20T12:05:00Z")
    later = overridden(card, "2026-11-20T12:09:00Z")
    response = client.feedback(PV, {"feedback": [first, later]})
    assert response.json() == {"received": 2, "stored": 2}
    assert len(stored(db, card)) == 2


def test_override_reason_is_stored_with_the_outcome(client, db):
    card = fresh_card(client)
    reason = {
        "reason": {"system": OVERRIDE_SYSTEM, "code": "already-addressed"},
        "userComment": "Bloods drawn this morning, results pending",
    }
    response = client.feedback(PV, {"feedback": [overridden(card, overrideReason=reason)]})
    assert response.status_code == 200
    [row] = stored(db, card)
    assert row["override_reason_system"] == OVERRIDE_SYSTEM
    assert row["override_reason_code"] == "already-addressed"


INVALID = {
    "outcome-not-accepted-or-overridden": (
        lambda card: {"feedback": [{**overridden(card), "outcome": "ignored"}]},
        "feedback[0].outcome",
    ),
    "missing-card": (
        lambda card: {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-20"}]},
        "feedback[0].card",
    ),
    "unwrapped-missing-card": (
        lambda card: {"outcome": "overridden", "outcomeTimestamp": "2026-11-20"},
        "card",
    ),
    "card-not-a-uuid": (
        lambda card: {"feedback": [overridden("card-1")]},
        "feedback[0].card",
    ),
    "accepted-without-acceptedSuggestions": (
        lambda card: {
            "feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-11-20"}]
        },
        "feedback[0].acceptedSuggestions",
    ),
    "accepted-with-overrideReason": (
        lambda card: {
            "card": card,
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "s-1"}],
            "overrideReason": {"userComment": "both at once"},
            "outcomeTimestamp": "2026-11-20",
        },
        "overrideReason",
    ),
    "overridden-with-acceptedSuggestions": (
        lambda card: {"feedback": [overridden(card, acceptedSuggestions=[{"id": "s-1"}])]},
        "feedback[0].acceptedSuggestions",
    ),
    "timestamp-not-a-date": (
        lambda card: {"feedback": [overridden(card, "yesterday")]},
        "feedback[0].outcomeTimestamp",
    ),
    "one-bad-item-in-a-batch": (
        lambda card: {"feedback": [overridden(card), {**overridden(card), "outcome": "maybe"}]},
        "feedback[1].outcome",
    ),
}


@pytest.mark.parametrize(("make", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_feedback_is_refused_naming_the_field_and_nothing_is_stored(
    client, db, make, field
):
    card = fresh_card(client)
    response = client.feedback(PV, make(card))
    assert response.status_code == 400
    assert field in outcome_fields(response), response.text
    assert stored(db, card) == []


def test_feedback_that_is_not_a_json_object_is_refused_naming_the_body(client):
    response = client.feedback(PV, [overridden(str(uuid.uuid4()))])
    assert response.status_code == 400
    assert "body" in outcome_fields(response)


def test_feedback_to_an_unknown_service_is_404(client, db):
    card = fresh_card(client)
    response = client.feedback("no-such-service", {"feedback": [overridden(card)]})
    assert response.status_code == 404
    assert "id" in outcome_fields(response)
    assert stored(db, card) == []


def test_stored_feedback_survives_a_service_restart(tmp_path):
    data_dir = tmp_path / "shared-data"
    env = {"CDS_DATA_DIR": str(data_dir), "CDS_FIXED_NOW": "2026-11-20T12:00:00Z"}
    card = str(uuid.uuid4())
    body = {"feedback": [overridden(card)]}

    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_service(first_dir, env, workers=1)
    try:
        response = CdsClient(first.base_url).feedback(PV, body)
        assert response.json()["stored"] == 1
    finally:
        stop(first.process)

    # A new process, started elsewhere, on the same data directory.
    second = start_service(second_dir, env, workers=1)
    try:
        again = CdsClient(second.base_url).feedback(PV, body)
        assert again.json() == {"received": 1, "stored": 0}
    finally:
        stop(second.process)
    assert len(stored(data_dir / "feedback.sqlite3", card)) == 1
