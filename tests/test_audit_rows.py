"""The audit rows as stored, value by value, on both engines: the INSERTs are the driver's own
SQL (stores/audit.py `_Statements`), so what SQLAlchemy's typed statements guaranteed is
pinned here: every column, the card flags, chunks, and a re-sent row stored once."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from servers import store_settings

from cds_service.audit import PatientHasher
from cds_service.stores import open_stores, schema
from cds_service.stores.audit import CHUNK

PV = "cramp-sciatica-patient-view"


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    with store_settings(request.param, tmp_path) as settings:
        opened = open_stores(settings, replay=False, writer=False)
        yield opened
        opened.close()


def entry(n: int, **extra) -> dict:
    return {
        "time": f"2026-11-20T12:00:{n % 60:02d}.000+00:00",
        "service_id": PV,
        "hook": "patient-view",
        "status": 200,
        "ms": 3.5 + n,
        "patient": f"{n:020d}",
        "rule_ids": ["quinine-caution", "statin-myopathy"],
        "fetched": ["Patient"],
        **extra,
    }


def stored(stores) -> tuple[list[dict], list[dict]]:
    stores.audit.flush()
    with stores.audit._engine.connect() as connection:
        invocations = [
            dict(row._mapping)
            for row in connection.execute(sa.select(schema.invocation).order_by("id"))
        ]
        cards = [
            dict(row._mapping)
            for row in connection.execute(
                sa.select(schema.card).order_by("invocation_id", "card_uuid")
            )
        ]
    return invocations, cards


def test_every_column_is_stored_as_recorded(stores):
    stores.audit.record(
        entry(1, hook_instance="h1", issuer="https://ehr.example", tenant="t1"),
        [("c-1", "quinine-caution", "warning", "d" * 16, True), ("c-2", "r2", "info")],
    )
    stores.audit.record({"time": "2026-11-20T12:00:02.000+00:00", "status": 404, "ms": 0.0}, [])
    invocations, cards = stored(stores)
    first, second = (
        {k: v for k, v in row.items() if k not in ("id", "event_id")} for row in invocations
    )
    assert all(len(row["event_id"]) == 32 for row in invocations)
    assert first == {
        "time": "2026-11-20T12:00:01.000+00:00",
        "service_id": PV,
        "hook": "patient-view",
        "hook_instance": "h1",
        "issuer": "https://ehr.example",
        "tenant": "t1",
        "status": 200,
        "latency_ms": 4.5,
        "patient_hash": "00000000000000000001",
        "rule_ids": json.dumps(["quinine-caution", "statin-myopathy"]),
        "fetched": json.dumps(["Patient"]),
    }
    assert second == {
        "time": "2026-11-20T12:00:02.000+00:00",
        "service_id": None,
        "hook": None,
        "hook_instance": None,
        "issuer": None,
        "tenant": None,
        "status": 404,
        "latency_ms": 0.0,
        "patient_hash": None,
        "rule_ids": "[]",
        "fetched": "[]",
    }
    assert [{k: v for k, v in c.items() if k != "invocation_id"} for c in cards] == [
        {
            "card_uuid": "c-1",
            "rule_id": "quinine-caution",
            "indicator": "warning",
            "evidence_digest": "d" * 16,
            "quieted": True,
        },
        # a card as spooled by a version before issue 16: no digest, not quieted
        {
            "card_uuid": "c-2",
            "rule_id": "r2",
            "indicator": "info",
            "evidence_digest": None,
            "quieted": False,
        },
    ]
    assert {c["invocation_id"] for c in cards} == {invocations[0]["id"]}


def test_a_batch_of_many_chunks_is_stored_whole_and_a_resent_one_once(stores):
    count = 2 * CHUNK + 7  # three invocation chunks; the cards of a chunk span two statements
    for n in range(count):
        stores.audit.record(entry(n), [(f"c-{n}-{k}", "r", "info", None, False) for k in range(3)])
    with stores.audit._lock:
        batch = [dict(row) for row in stores.audit._queue]
    invocations, cards = stored(stores)
    assert len(invocations) == count and len(cards) == 3 * count
    patient_of = {row["id"]: row["patient_hash"] for row in invocations}
    for card in cards:  # "c-<n>-<k>" belongs to the invocation of patient n
        assert patient_of[card["invocation_id"]] == f"{int(card['card_uuid'].split('-')[1]):020d}"
    # The same rows again (a spool file drained after its rows did reach the database).
    stores.audit._write(batch[: CHUNK + 1])
    assert stored(stores) == (invocations, cards)


def test_patient_hash_is_the_keyed_sha256_of_the_id_or_of_the_client_and_id():
    hasher = PatientHasher("k" * 64, Path("unused"))

    def expected(text: str) -> str:
        return hmac.new(b"k" * 64, text.encode(), hashlib.sha256).hexdigest()[:20]

    for patient in ("123", "Ünïcode-ß", ""):
        assert hasher(patient) == hasher.patient(patient) == expected(patient)
        assert hasher.patient(patient, "https://ehr.example", "t") == expected(
            f"client\x00https://ehr.example\x00t\x00{patient}"
        )


@pytest.mark.parametrize(
    "values", [None, [], (), ["R-1"], ("R-1", "R-2"), ["prefetch-ä", 'quo"te'], ("x",) * 30]
)
def test_rule_and_fetched_columns_are_json_dumps_of_the_list(values):
    """The audit row's rule_ids/fetched text skips json.dumps for an empty list: the same text
    as json.dumps wrote before, for every value a request records."""
    from cds_service.stores.audit import _json_list

    assert _json_list(values) == json.dumps(values or [])
