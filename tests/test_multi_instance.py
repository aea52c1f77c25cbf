"""Several instances behind a real nginx running deploy/nginx.conf (tests/cluster.py).

- An instance killed with SIGKILL under load: the other keeps serving, only the POSTs in flight
  on the killed one fail (502 from nginx, an OperationOutcome), every call sent after it died
  succeeds, and a GET in flight is retried on the other instance.
- nginx refuses a body over the service's limit itself, with an OperationOutcome; one of
  exactly the limit goes through.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from cluster import Cluster, cluster
from conftest import EXAMPLE_NOW, load_scenario

from cds_service.settings import Settings

SERVICE = "cramp-sciatica-patient-view"
POST_THREADS = 4
# Access log lines of deploy/nginx.conf's `cds` format.
ACCESS = re.compile(
    r'^\S+ "(?P<method>\w+) (?P<path>\S+)" (?P<status>\d{3}) \d+ rt=\S+ '
    r"upstream=(?P<upstream>.*?) us=(?P<us>.*?) ut="
)


def access_log(running: Cluster) -> list[re.Match]:
    return [
        m for line in running.nginx.log_path.read_text().splitlines() if (m := ACCESS.match(line))
    ]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two instances behind nginx, never harmed by the tests that use it."""
    with cluster(
        tmp_path_factory.mktemp("pair"), count=2, env={"CDS_FIXED_NOW": EXAMPLE_NOW}
    ) as running:
        yield running


def test_nginx_spreads_calls_over_both_instances(pair):
    request, _ = load_scenario("mixed-three-causes")
    http = requests.Session()
    for _ in range(6):
        answer = http.post(f"{pair.url}/cds-services/{SERVICE}", json=request, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cards"]
    served = {m["upstream"] for m in access_log(pair) if m["method"] == "POST"}
    assert served == {pair.address(0), pair.address(1)}
    assert requests.get(f"{pair.url}/health", timeout=10).json()["status"] == "ok"


def test_body_limit_at_nginx_equals_the_service_limit(pair):
    """nginx's client_max_body_size is the service's CDS_MAX_BODY_BYTES: a body of exactly the
    limit reaches an instance and is answered; one byte more is refused by nginx with 413 and
    an OperationOutcome, and no instance sees it."""
    limit = Settings().max_body_bytes
    request, _ = load_scenario("mixed-three-causes")
    raw = json.dumps(request).encode()
    at_limit = raw + b" " * (limit - len(raw))  # JSON allows trailing whitespace
    url = f"{pair.url}/cds-services/{SERVICE}"
    headers = {"Content-Type": "application/json"}

    inside = requests.post(url, data=at_limit, headers=headers, timeout=60)
    assert inside.status_code == 200, inside.text
    assert inside.json()["cards"]

    outside = requests.post(url, data=at_limit + b" ", headers=headers, timeout=60)
    assert outside.status_code == 413
    assert outside.headers["Content-Type"].startswith("application/json")
    outcome = outside.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert str(limit) in outcome["issue"][0]["diagnostics"]
    last = [m for m in access_log(pair) if m["method"] == "POST"][-1]
    assert (last["status"], last["upstream"]) == ("413", "-")  # refused by nginx itself


@dataclass
class Call:
    method: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all
    body: str


def _load(url: str, method: str, body: bytes | None, stop: threading.Event, calls: list[Call]):
    http = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            answer = http.request(
                method, url, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            status, text = answer.status_code, answer.text
        except requests.RequestException as exc:
            status, text = None, type(exc).__name__
        calls.append(Call(method, started, time.monotonic(), status, text))


def test_an_instance_killed_under_load_only_fails_the_calls_in_flight_on_it(tmp_path):
    request, _ = load_scenario("mixed-three-causes")
    body = json.dumps(request).encode()
    with cluster(tmp_path, count=2, env={"CDS_FIXED_NOW": EXAMPLE_NOW}) as running:
        stop, calls = threading.Event(), []
        hook = f"{running.url}/cds-services/{SERVICE}"
        threads = [
            threading.Thread(target=_load, args=(hook, "POST", body, stop, calls))
            for _ in range(POST_THREADS)
        ]
        threads.append(
            threading.Thread(
                target=_load, args=(f"{running.url}/cds-services", "GET", None, stop, calls)
            )
        )
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            killing = time.monotonic()
            running.kill(0)
            dead = time.monotonic()
            # Past fail_timeout (5 s): nginx tries the dead instance again, and the POST it
            # could not send there goes to the other one.
            time.sleep(6.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        log = access_log(running)

    posts = [c for c in calls if c.method == "POST"]
    gets = [c for c in calls if c.method == "GET"]
    before = [c for c in posts if c.ended < killing]
    after = [c for c in posts if c.started > dead]
    failed = [c for c in posts if c.status != 200]
    killed, survivor = running.address(0), running.address(1)
    served_before = {m["upstream"] for m in log if m["method"] == "POST" and m["us"] == "200"}
    print(
        f"\n{len(posts)} hook calls ({len(before)} before the kill, {len(after)} after), "
        f"{len(failed)} failed (in flight on the killed instance), {len(gets)} GETs"
    )
    assert {killed, survivor} <= served_before  # both served before the kill
    assert len(before) >= 20 and len(after) >= 50
    # Only the calls in flight when the instance died failed, at most one per client thread:
    # nginx's 502 OperationOutcome, or (when the instance died while nginx was passing its
    # answer on) an answer cut short.
    for call in failed:
        assert call.started < dead and call.ended >= killing, call
        if call.status is None:
            assert call.body == "ChunkedEncodingError", call
        else:
            assert call.status == 502, call
            assert json.loads(call.body)["resourceType"] == "OperationOutcome"
    assert len(failed) <= POST_THREADS
    # Everything sent after it died was answered, and every GET (a GET in flight is retried).
    assert all(c.status == 200 for c in after)
    assert gets and all(c.status == 200 for c in gets)
    # nginx's side: each 502 came from the killed instance; the calls that could not be sent to
    # it (connection refused: right after the kill, and again when fail_timeout had passed) were
    # passed to the survivor and answered there.
    failed_at_nginx = [m for m in log if m["status"] == "502"]
    assert len(failed_at_nginx) == sum(c.status == 502 for c in failed)
    assert all(m["upstream"] == killed for m in failed_at_nginx)
    retried = [m for m in log if m["upstream"] == f"{killed}, {survivor}"]
    assert retried and all(m["status"] == "200" for m in retried)
