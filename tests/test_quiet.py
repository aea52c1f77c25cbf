"""Quieting repeated cards (issue 16, point 3), over HTTP against `cds-service serve`.

Services share one CDS_DATA_DIR (the embedded stores), each with its clock pinned to a day by
CDS_FIXED_NOW, so "7 days later" is another process on the same data: the period's last day
and the day after are asked of real services. The same flow then runs over PostgreSQL with two
instances. Every test uses patients of its own (a scenario's patient id renamed), so it passes
alone or in any order; the decisions themselves are in tests/test_quiet_logic.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import EXAMPLES, check_answer
from prometheus_client.parser import text_string_to_metric_families
from servers import BIN, free_port, postgres_database, start_service, stop

from cds_service.cards import CARD_NAMESPACE
from cds_service.keys import make_key_pair, sign_token

DAY0 = datetime(2026, 11, 20, 12, tzinfo=UTC)  # the examples' day
SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"
PATIENT_VIEW = "cramp-sciatica-patient-view"
# The audit writer writes every 0.2 s; a card served by another instance is in the audit
# trail (and its feedback can quiet) once that instance has written it; another instance's
# index of quieted patients is read about once a second.
EVENTUALLY_S = 10


def day(offset: int) -> str:
    return (DAY0 + timedelta(days=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """`cds-service serve` processes on one data directory, started when a day is first asked
    for (one worker each: the feedback then reaches the process that served the card)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = root
        self.data_dir = root / "data"
        self.env = {"CDS_DATA_DIR": str(self.data_dir), **(env or {})}
        self.running: dict[str, object] = {}

    def at(self, offset: int, name: str = "") -> str:
        """The base URL of a service whose clock says DAY0 + offset days."""
        key = f"{offset}{name}"
        if key not in self.running:
            workdir = self.root / f"day{key}"
            workdir.mkdir()
            env = {**self.env, "CDS_FIXED_NOW": day(offset)}
            self.running[key] = start_service(workdir, env, workers=1)
        return self.running[key].base_url

    def stop(self) -> None:
        for service in self.running.values():
            stop(service.process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("quiet"))
    yield running
    running.stop()


def request_for(scenario: str, patient: str) -> dict:
    """The scenario's hook request for a patient of the test's own (its id renamed), with a
    fresh hookInstance (so fresh card uuids)."""
    text = (EXAMPLES / f"{scenario}.request.json").read_text()
    body = json.loads(
        text.replace(f'"{scenario}', f'"{patient}').replace(
            f"Patient/{scenario}", f"Patient/{patient}"
        )
    )
    assert body["context"]["patientId"] == patient
    body["hookInstance"] = str(uuid.uuid4())
    return body


def patient(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def call(base_url: str, body: dict, service: str = PATIENT_VIEW) -> dict[str, dict]:
    """The cards of one hook call, by rule id."""
    response = requests.post(f"{base_url}/cds-services/{service}", json=body, timeout=30)
    check_answer(response, "response")
    assert response.status_code == 200, response.text
    return {card["source"]["topic"]["code"]: card for card in response.json()["cards"]}


def cards_of(base_url: str, scenario: str, who: str) -> dict[str, dict]:
    return call(base_url, request_for(scenario, who))


def override(base_url: str, card_uuid: str, code: str, service: str = PATIENT_VIEW) -> dict:
    item = {
        "card": card_uuid,
        "outcome": "overridden",
        "overrideReason": {"reason": {"system": SYSTEM, "code": code}},
        "outcomeTimestamp": "2026-11-20T12:05:00Z",
    }
    response = requests.post(
        f"{base_url}/cds-services/{service}/feedback", json={"feedback": [item]}, timeout=30
    )
    check_answer(response, None)
    assert response.status_code == 200, response.text
    return response.json()


def eventually(check, seconds: float = EVENTUALLY_S):
    """The check's value once it is truthy (an audit row another process writes in batches)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def with_potassium(body: dict, value: float, when: str) -> dict:
    """The request with one more potassium result (a new record: new evidence)."""
    who = body["context"]["patientId"]
    body["prefetch"]["observations"].setdefault("entry", []).append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": f"{who}-k-new",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
                "subject": {"reference": f"Patient/{who}"},
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": value,
                    "unit": "mmol/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "mmol/L",
                },
            }
        }
    )
    return body


# --- periods --------------------------------------------------------------------------------


def test_an_info_card_addressed_is_quiet_for_that_patient_through_day_30(cluster):
    who, other = patient("cramps-only"), patient("cramps-only")
    first = cards_of(cluster.at(0), "cramps-only", who)
    card = first["cramp-labs-missing"]
    assert card["indicator"] == "info"
    assert {r["code"] for r in card["overrideReasons"]} >= {"already-addressed", "not-applicable"}
    override(cluster.at(0), card["uuid"], "already-addressed")

    assert "cramp-labs-missing" not in cards_of(cluster.at(0), "cramps-only", who)
    assert "cramp-labs-missing" in cards_of(cluster.at(0), "cramps-only", other)  # not theirs
    assert "cramp-labs-missing" not in cards_of(cluster.at(30), "cramps-only", who)  # last day
    assert "cramp-labs-missing" in cards_of(cluster.at(31), "cramps-only", who)  # back


def test_a_warning_card_declined_is_quiet_through_day_7_and_back_on_day_8(cluster):
    who = patient("electrolyte-potassium-low")
    scenario = "electrolyte-potassium-low"
    card = cards_of(cluster.at(0), scenario, who)["electrolyte-cramp-cause"]
    assert card["indicator"] == "warning"
    override(cluster.at(0), card["uuid"], "patient-declined")

    assert "electrolyte-cramp-cause" not in cards_of(cluster.at(6), scenario, who)
    assert "electrolyte-cramp-cause" not in cards_of(cluster.at(7), scenario, who)  # last day
    assert "electrolyte-cramp-cause" in cards_of(cluster.at(8), scenario, who)  # back


def test_not_applicable_never_quiets(cluster):
    who = patient("cramps-only")
    card = cards_of(cluster.at(0), "cramps-only", who)["cramp-labs-missing"]
    override(cluster.at(0), card["uuid"], "not-applicable")
    assert "cramp-labs-missing" in cards_of(cluster.at(0), "cramps-only", who)


def test_a_critical_card_addressed_is_still_shown(cluster):
    who = patient("cauda-equina-coded")
    card = cards_of(cluster.at(0), "cauda-equina-coded", who)["cauda-equina-red-flag"]
    assert card["indicator"] == "critical"
    override(cluster.at(0), card["uuid"], "already-addressed")
    again = cards_of(cluster.at(0), "cauda-equina-coded", who)
    assert again["cauda-equina-red-flag"]["indicator"] == "critical"


# --- evidence -------------------------------------------------------------------------------


def test_a_new_lower_potassium_shows_the_quieted_card_again(cluster):
    scenario = "electrolyte-potassium-low"
    who = patient(scenario)
    card = cards_of(cluster.at(0), scenario, who)["electrolyte-cramp-cause"]
    override(cluster.at(0), card["uuid"], "already-addressed")
    assert "electrolyte-cramp-cause" not in cards_of(cluster.at(0), scenario, who)

    lower = with_potassium(request_for(scenario, who), 2.9, "2026-11-20T08:00:00Z")
    shown = call(cluster.at(0), lower)["electrolyte-cramp-cause"]
    assert "2.9" in shown["summary"]
    # The unchanged record stays quiet: only the new evidence brought the card back.
    assert "electrolyte-cramp-cause" not in cards_of(cluster.at(0), scenario, who)


# --- across instances: feedback before its card is audited ----------------------------------


def test_feedback_that_arrives_before_its_card_is_audited_quiets_on_every_instance(cluster):
    who = patient("cramps-only")
    body = request_for("cramps-only", who)
    # The card uuid is the hook instance's and the rule's: the feedback can come first, to
    # another instance, before any audit row exists (it is kept pending).
    card_uuid = str(uuid.uuid5(CARD_NAMESPACE, f"{body['hookInstance']}/cramp-labs-missing"))
    assert override(cluster.at(0, "b"), card_uuid, "already-addressed")["stored"] == 1
    shown = call(cluster.at(0), body)["cramp-labs-missing"]
    assert shown["uuid"] == card_uuid  # the feedback names this card

    def quiet_on(base_url: str) -> bool:
        return "cramp-labs-missing" not in cards_of(base_url, "cramps-only", who)

    assert eventually(lambda: quiet_on(cluster.at(0)))
    # The other instance learns of the patient's entry within about a second (its index).
    assert eventually(lambda: quiet_on(cluster.at(0, "b")))


# --- operators: the console, lifting, the CLI, analytics -----------------------------------


def console_quieted(base_url: str, who: str) -> str:
    """The console's render of a request for this patient (the HTML)."""
    response = requests.post(
        f"{base_url}/console/render",
        json={"service": PATIENT_VIEW, "response": {"cards": []}, "patientId": who},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.text


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **cluster.env, "CDS_FIXED_NOW": day(0)}
    return subprocess.run(
        [str(BIN / "cds-service"), "quiet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_operator_sees_and_lifts_a_quiet_entry_and_the_card_shows_at_once(cluster):
    who = patient("cramps-only")
    base = cluster.at(0)
    card = cards_of(base, "cramps-only", who)["cramp-labs-missing"]
    assert "quieted by feedback" not in console_quieted(base, who)
    override(base, card["uuid"], "already-addressed")
    assert "cramp-labs-missing" not in cards_of(base, "cramps-only", who)

    page = console_quieted(base, who)
    assert "quieted by feedback: <code>cramp-labs-missing</code>, until 2026-12-20" in page
    assert "Already addressed" in page
    assert "quieted by feedback" not in console_quieted(base, patient("cramps-only"))

    listed = json.loads(cli(cluster, "list", "--json").stdout)
    entry = next(e for e in listed if e["card"] == card["uuid"])
    assert (entry["rule_id"], entry["until"], entry["reason"]) == (
        "cramp-labs-missing",
        "2026-12-20",
        "already-addressed",
    )
    assert who not in json.dumps(listed)  # the keyed hash only

    lift = requests.post(f"{base}/console/quiet/{entry['id']}/lift", json={}, timeout=30)
    assert lift.status_code == 200 and lift.json() == {"lifted": True}
    assert "cramp-labs-missing" in cards_of(base, "cramps-only", who)  # the very next call
    assert "cramp-labs-missing" in cards_of(cluster.at(0, "b"), "cramps-only", who)
    again = requests.post(f"{base}/console/quiet/{entry['id']}/lift", json={}, timeout=30)
    assert again.json() == {"lifted": False}
    assert "quieted by feedback" not in console_quieted(base, who)


def test_the_cli_lifts_an_entry(cluster):
    who = patient("electrolyte-potassium-low")
    scenario = "electrolyte-potassium-low"
    card = cards_of(cluster.at(0), scenario, who)["electrolyte-cramp-cause"]
    override(cluster.at(0), card["uuid"], "already-addressed")
    assert "electrolyte-cramp-cause" not in cards_of(cluster.at(0), scenario, who)
    listed = json.loads(cli(cluster, "list", "--json").stdout)
    entry = next(e for e in listed if e["card"] == card["uuid"])
    lifted = cli(cluster, "lift", str(entry["id"]))
    assert lifted.returncode == 0 and "lifted" in lifted.stdout
    assert "electrolyte-cramp-cause" in cards_of(cluster.at(0), scenario, who)
    assert cli(cluster, "lift", str(entry["id"])).returncode == 1  # not running any more


def analytics(base_url: str, rule_id: str) -> dict[str, str]:
    today = datetime.now(UTC).date().isoformat()  # audit rows are dated by the real clock
    response = requests.get(
        f"{base_url}/console/analytics.csv", params={"from": today, "to": today}, timeout=30
    )
    assert response.status_code == 200
    rows = {r["rule_id"]: r for r in csv.DictReader(io.StringIO(response.text))}
    return rows[rule_id]


def quieted_metric(base_url: str, rule_id: str) -> float:
    """cds_cards_quieted_total{rule=...} in the service's /metrics (summed over workers)."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cds_cards_quieted_total" and sample.labels.get("rule") == rule_id
    )


def test_the_analytics_and_metrics_count_quieted_cards_apart_from_those_shown(cluster):
    base = cluster.at(0)
    who = patient("cramps-only")
    before = analytics(base, "cramp-labs-missing")
    counted = quieted_metric(base, "cramp-labs-missing")
    card = cards_of(base, "cramps-only", who)["cramp-labs-missing"]
    override(base, card["uuid"], "already-addressed")
    for _ in range(2):
        assert "cramp-labs-missing" not in cards_of(base, "cramps-only", who)
    after = analytics(base, "cramp-labs-missing")
    assert int(after["quieted"]) - int(before["quieted"]) == 2
    assert int(after["fired"]) - int(before["fired"]) == 1
    assert int(after["overridden"]) - int(before["overridden"]) == 1
    assert quieted_metric(base, "cramp-labs-missing") - counted == 2


# --- over PostgreSQL, two instances ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Two instances on one PostgreSQL database (migrated with `cds-service db upgrade`),
    each with a data directory of its own and the operator's shared CDS_LOG_HASH_KEY."""
    root = tmp_path_factory.mktemp("quiet-pg")
    with postgres_database() as url:
        env = {"CDS_DATABASE_URL": url, "CDS_LOG_HASH_KEY": uuid.uuid4().hex * 2}
        upgrade = subprocess.run(
            [str(BIN / "cds-service"), "db", "upgrade"],
            env={**os.environ, **env, "CDS_DATA_DIR": str(root / "upgrade")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        one = Cluster(root / "a", env)
        two = Cluster(root / "b", env)
        (root / "a").mkdir()
        (root / "b").mkdir()
        try:
            yield one, two
        finally:
            one.stop()
            two.stop()


def test_over_postgresql_feedback_to_one_instance_quiets_the_other_until_lifted(shared):
    one, two = shared
    who, other = patient("cramps-only"), patient("cramps-only")
    card = cards_of(one.at(0), "cramps-only", who)["cramp-labs-missing"]
    # Sent to the other instance, maybe before the first has written the card's audit row.
    assert override(two.at(0), card["uuid"], "already-addressed")["stored"] == 1

    assert eventually(lambda: "cramp-labs-missing" not in cards_of(one.at(0), "cramps-only", who))
    # Whoever filled the pending entry in, the other instance's index has it within a second.
    assert eventually(lambda: "cramp-labs-missing" not in cards_of(two.at(0), "cramps-only", who))
    assert "cramp-labs-missing" in cards_of(one.at(0), "cramps-only", other)
    assert "cramp-labs-missing" not in cards_of(one.at(30), "cramps-only", who)
    assert "cramp-labs-missing" in cards_of(one.at(31), "cramps-only", who)

    # The shared analytics count them (the CLI reads the same database).
    today = datetime.now(UTC).date().isoformat()
    report = subprocess.run(
        [str(BIN / "cds-service"), "analytics", "--from", today, "--to", today, "--json"],
        env={**os.environ, **one.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    rows = {row["rule_id"]: row for row in json.loads(report.stdout)}
    assert rows["cramp-labs-missing"]["quieted"] >= 3
    assert rows["cramp-labs-missing"]["fired"] >= 3  # the first card, the other patient, day 31

    page = console_quieted(two.at(0), who)
    assert "quieted by feedback: <code>cramp-labs-missing</code>, until 2026-12-20" in page
    entry_id = page.split('data-entry="', 1)[1].split('"', 1)[0]
    lift = requests.post(f"{two.at(0)}/console/quiet/{entry_id}/lift", json={}, timeout=30)
    assert lift.json() == {"lifted": True}
    assert "cramp-labs-missing" in cards_of(one.at(0), "cramps-only", who)


def test_over_postgresql_a_warning_is_back_on_day_8_and_on_new_evidence(shared):
    one, two = shared
    scenario = "electrolyte-potassium-low"
    who = patient(scenario)
    card = cards_of(one.at(0), scenario, who)["electrolyte-cramp-cause"]
    override(one.at(0), card["uuid"], "patient-declined")
    assert "electrolyte-cramp-cause" not in cards_of(two.at(7), scenario, who)
    assert "electrolyte-cramp-cause" in cards_of(two.at(8), scenario, who)
    lower = with_potassium(request_for(scenario, who), 2.9, "2026-11-21T08:00:00Z")
    assert "electrolyte-cramp-cause" in call(two.at(7), lower)


# --- one patient id, several EHRs ------------------------------------------------------------


def test_a_patient_id_quieted_at_one_ehr_is_not_quiet_at_another(tmp_path):
    """A patient id means something only within the EHR that sent it: feedback from one
    issuer (or tenant) never quiets the cards of another's patient who has the same id."""
    issuers = {}
    for name in ("https://ehr-a.example", "https://ehr-b.example"):
        keys = tmp_path / f"keys-{len(issuers)}"
        issuers[name] = (keys, make_key_pair(keys, "ES384"))
    trust = tmp_path / "trust.json"
    trust.write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": iss, "jwks": json.loads((keys / "jwks.json").read_text())}
                    for iss, (keys, _) in issuers.items()
                ]
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "CDS_TRUST_CONFIG": str(trust),
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_FIXED_NOW": day(0),
    }
    service = start_service(tmp_path, env, workers=1, auth=True, port=port)

    def post(iss: str, path: str, body: dict) -> requests.Response:
        keys, kid = issuers[iss]
        token = sign_token(keys / "private-key.pem", kid=kid, iss=iss, aud=f"{base}{path}")
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(f"{base}{path}", json=body, headers=headers, timeout=30)

    def labs_card(iss: str, who: str) -> dict | None:
        answer = post(iss, f"/cds-services/{PATIENT_VIEW}", request_for("cramps-only", who))
        assert answer.status_code == 200, answer.text
        cards = {c["source"]["topic"]["code"]: c for c in answer.json()["cards"]}
        return cards.get("cramp-labs-missing")

    try:
        a, b = issuers
        who = patient("cramps-only")  # the same id at both EHRs: two different people
        card = labs_card(a, who)
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": {"reason": {"system": SYSTEM, "code": "already-addressed"}},
            "outcomeTimestamp": "2026-11-20T12:05:00Z",
        }
        stored = post(a, f"/cds-services/{PATIENT_VIEW}/feedback", {"feedback": [item]})
        assert stored.status_code == 200, stored.text
        assert labs_card(a, who) is None  # quiet for EHR A's patient
        assert labs_card(b, who) is not None  # EHR B's patient with the same id: shown
    finally:
        stop(service.process)
