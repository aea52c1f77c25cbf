"""A bounded soak: the served app (gunicorn, 3 workers) under concurrent valid and invalid
hook requests and feedback, some feedback sent again, some at once from several clients.

No request may fail unexpectedly (no 5xx, no connection error, no answer other than the one
expected), and every distinct feedback item must be stored exactly once.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from conftest import DEADLINE_S, EXAMPLE_NOW, load_scenario, scenario_names
from servers import start_service, stop

from cds_service import validation

LOAD_SECONDS = 15.0
CLIENTS = 8
WORKERS = 3
SEED = 20261120
JSON = {"Content-Type": "application/json"}


@dataclass
class Ledger:
    """What the clients sent and saw, shared between them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: Counter = field(default_factory=Counter)  # kind of request -> how many
    unexpected: list[str] = field(default_factory=list)
    # Per service: uuids of the cards it showed, not yet given feedback.
    cards: dict[str, list[str]] = field(default_factory=dict)
    # Per service: card uuid -> its feedback item (feedback is stored per service).
    items: dict[str, dict[str, dict]] = field(default_factory=dict)
    sends: Counter = field(default_factory=Counter)  # card uuid -> times its feedback was sent
    stored: int = 0  # the sum of "stored" the service answered


@pytest.fixture(scope="module")
def soak_service(tmp_path_factory):
    running = start_service(
        tmp_path_factory.mktemp("soak"),
        {
            "CDS_FIXED_NOW": EXAMPLE_NOW,
            "CDS_FHIR_DEADLINE_S": str(DEADLINE_S),
            "CDS_VALIDATE_RESPONSES": "true",
        },
        workers=WORKERS,
    )
    yield running
    stop(running.process)


SCENARIOS = {name: load_scenario(name) for name in scenario_names()}


def invalid_requests() -> list[tuple[str, str, bytes, dict, int]]:
    """(kind, service id, body, headers, the status expected)."""
    request, expected = SCENARIOS["cramps-only"]
    service = expected["service"]
    body = json.dumps(request).encode()
    no_instance = {k: v for k, v in request.items() if k != "hookInstance"}
    no_patient_prefetch = {**request, "prefetch": {**request["prefetch"]}}
    del no_patient_prefetch["prefetch"]["patient"]
    return [
        ("truncated JSON", service, body[: len(body) // 2], JSON, 400),
        ("no hookInstance", service, json.dumps(no_instance).encode(), JSON, 400),
        ("wrong Content-Type", service, body, {"Content-Type": "text/plain"}, 415),
        ("unknown service", "no-such-service", body, JSON, 404),
        ("required prefetch absent", service, json.dumps(no_patient_prefetch).encode(), JSON, 412),
        ("feedback without card", f"{service}/feedback", b'{"outcome": "overridden"}', JSON, 400),
    ]


INVALID = invalid_requests()
SERVICES = sorted({expected["service"] for _request, expected in SCENARIOS.values()})


def client_loop(base_url: str, index: int, until: float, ledger: Ledger) -> None:
    rng = random.Random(SEED + index)  # noqa: S311 - reproducible traffic, not secrets
    http = requests.Session()  # keep-alive, and no retries: a dropped connection is a failure
    while time.monotonic() < until:
        action = rng.choices(["valid", "invalid", "feedback"], weights=[5, 2, 3])[0]
        try:
            if action == "valid":
                send_valid(http, base_url, rng, ledger)
            elif action == "invalid":
                send_invalid(http, base_url, rng, ledger)
            else:
                send_feedback(http, base_url, rng, ledger)
        except requests.RequestException as exc:
            with ledger.lock:
                ledger.unexpected.append(f"{action}: {type(exc).__name__}: {exc}")


def send_valid(http, base_url: str, rng: random.Random, ledger: Ledger) -> None:
    name = rng.choice(sorted(SCENARIOS))
    request, expected = SCENARIOS[name]
    request = {**request, "hookInstance": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
    response = http.post(f"{base_url}/cds-services/{expected['service']}", json=request, timeout=30)
    cards = response.json().get("cards") if response.status_code == 200 else None
    with ledger.lock:
        ledger.sent["valid"] += 1
        if cards is None:
            ledger.unexpected.append(f"valid {name}: {response.status_code} {response.text[:200]}")
            return
        got = sorted(card["source"]["topic"]["code"] for card in cards)
        if got != sorted(expected["rule_ids"]):
            ledger.unexpected.append(f"valid {name}: cards {got}")
        if validation.problems("response", response.json()):
            ledger.unexpected.append(f"valid {name}: answer breaks the response schema")
        ledger.cards.setdefault(expected["service"], []).extend(card["uuid"] for card in cards)


def send_invalid(http, base_url: str, rng: random.Random, ledger: Ledger) -> None:
    kind, path, body, headers, status = rng.choice(INVALID)
    response = http.post(f"{base_url}/cds-services/{path}", data=body, headers=headers, timeout=30)
    problem = None
    if response.status_code != status:
        problem = f"invalid {kind}: {response.status_code} {response.text[:200]}"
    elif response.json().get("resourceType") != "OperationOutcome":
        problem = f"invalid {kind}: not an OperationOutcome"
    with ledger.lock:
        ledger.sent["invalid"] += 1
        if problem:
            ledger.unexpected.append(problem)


def new_item(rng: random.Random, ledger: Ledger, service: str) -> dict:
    """A feedback item about a card the service showed (or, before any, a fresh uuid)."""
    with ledger.lock:
        shown = ledger.cards.get(service)
        card = shown.pop(rng.randrange(len(shown))) if shown else None
    card = card or str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if rng.random() < 0.5:
        return {
            "card": card,
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "s-1"}],
            "outcomeTimestamp": "2026-11-20T12:05:00Z",
        }
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:06:00Z"}


def send_feedback(http, base_url: str, rng: random.Random, ledger: Ledger) -> None:
    """1-3 items; a third of them sent before (by this client or another)."""
    service = rng.choice(SERVICES)
    items = []
    for _ in range(rng.randint(1, 3)):
        with ledger.lock:
            earlier = list(ledger.items.get(service, {}).values())
        if earlier and rng.random() < 0.33:
            items.append(rng.choice(earlier))
        else:
            item = new_item(rng, ledger, service)
            with ledger.lock:
                ledger.items.setdefault(service, {})[item["card"]] = item
            items.append(item)
    items = list({item["card"]: item for item in items}.values())
    body = {"feedback": items} if len(items) > 1 or rng.random() < 0.5 else items[0]
    response = http.post(f"{base_url}/cds-services/{service}/feedback", json=body, timeout=30)
    with ledger.lock:
        ledger.sent["feedback"] += 1
        for item in items:
            ledger.sends[(service, item["card"])] += 1
        if response.status_code != 200 or response.json().get("received") != len(items):
            ledger.unexpected.append(f"feedback: {response.status_code} {response.text[:200]}")
        else:
            ledger.stored += response.json()["stored"]


def burst(base_url: str, ledger: Ledger) -> None:
    """Every client sends the same new feedback at the same moment, to the same service."""
    service = SERVICES[0]
    rng = random.Random(f"burst {SEED}")  # noqa: S311 - reproducible traffic, not secrets
    items = [new_item(rng, ledger, service) for _ in range(3)]
    with ledger.lock:
        ledger.items.setdefault(service, {}).update({item["card"]: item for item in items})
    start = threading.Barrier(CLIENTS)

    def send(_: int) -> None:
        start.wait()
        try:
            response = requests.post(
                f"{base_url}/cds-services/{service}/feedback", json={"feedback": items}, timeout=30
            )
        except requests.RequestException as exc:
            with ledger.lock:
                ledger.unexpected.append(f"burst: {type(exc).__name__}: {exc}")
            return
        with ledger.lock:
            ledger.sent["burst"] += 1
            for item in items:
                ledger.sends[(service, item["card"])] += 1
            if response.status_code != 200:
                ledger.unexpected.append(f"burst: {response.status_code} {response.text[:200]}")
            else:
                ledger.stored += response.json()["stored"]

    senders = [threading.Thread(target=send, args=(n,)) for n in range(CLIENTS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)


def test_concurrent_mixed_traffic_fails_nothing_and_stores_each_feedback_once(soak_service):
    ledger = Ledger()
    until = time.monotonic() + LOAD_SECONDS
    clients = [
        threading.Thread(target=client_loop, args=(soak_service.base_url, i, until, ledger))
        for i in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(LOAD_SECONDS + 60)
    assert not any(client.is_alive() for client in clients)
    burst(soak_service.base_url, ledger)

    distinct = {
        (service, card.removeprefix("urn:uuid:"), item["outcome"])
        for service, items in ledger.items.items()
        for card, item in items.items()
    }
    print(
        f"\nsoak: {dict(ledger.sent)} requests in {LOAD_SECONDS:g} s; {len(distinct)} "
        f"distinct feedback items sent {sum(ledger.sends.values())} times"
    )
    assert ledger.unexpected == []
    assert min(ledger.sent[kind] for kind in ("valid", "invalid", "feedback")) >= 50, ledger.sent
    repeated = [card for card, times in ledger.sends.items() if times > 1]
    assert len(repeated) >= 20, "too few repeats to test idempotence"

    # Each distinct item reported stored once in all, and found once in the store.
    assert ledger.stored == len(distinct)
    db_path = soak_service.data_dir / "feedback.sqlite3"
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT service_id, card_uuid, outcome FROM feedback").fetchall()
    assert len(rows) == len(distinct)
    assert set(rows) == distinct

    log = soak_service.log_text()
    assert '"status": 5' not in log
    assert "response failed its schema" not in log
    assert '"event": "error"' not in log
