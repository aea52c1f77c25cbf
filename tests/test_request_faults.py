"""Request faults over HTTP: each is refused with a 4xx and an OperationOutcome, in bounded
memory, and the next request is served as usual.

Beyond test_http_api's bad requests: a body cut short anywhere, nesting deep inside prefetch,
50 MB bodies (with a length and chunked), every wrong Content-Type, bytes and escapes that are
not Unicode, NaN, thousands of prefetch keys, the same resource twice in a prefetch Bundle;
and the FHIR fallback answering with a Bundle of 10,000 entries.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import DEADLINE_S, check_answer, load_scenario, outcome_fields, rule_ids
from servers import send_json
from test_fhir_fallback import (
    IN_TIME_S,
    FakeFhir,
    card_details,
    heart_rate,
    serve_fake,
    unique_scenario,
    with_server,
)

PV = "cramp-sciatica-patient-view"
INVOKE = f"/cds-services/{PV}"
FEEDBACK = f"/cds-services/{PV}/feedback"
JSON = {"Content-Type": "application/json"}
FIFTY_MB = 50 * 1024 * 1024
MEMORY_GROWTH_KB = 30 * 1024


def post(client, path: str, data: bytes, headers: dict | None = None):
    response = client.http.post(
        f"{client.base_url}{path}",
        data=data,
        headers=JSON if headers is None else headers,
        timeout=30,
    )
    check_answer(response, None)  # never a 5xx; every error an OperationOutcome
    return response


def assert_refused(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert field in outcome_fields(response), response.text


def hook_request(name: str = "mixed-three-causes") -> dict:
    return load_scenario(name)[0]


def feedback_body() -> dict:
    return {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-20T12:05:00Z",
                "overrideReason": {"userComment": "Seen already"},
            }
        ]
    }


BODIES = {INVOKE: hook_request, FEEDBACK: feedback_body}


# --------------------------------------------------------------------------- truncated JSON


@pytest.mark.parametrize("path", [INVOKE, FEEDBACK], ids=["invoke", "feedback"])
def test_a_body_cut_short_anywhere_is_400_naming_the_body(client, path):
    data = json.dumps(BODIES[path]()).encode()
    cuts = sorted({0, 1, len(data) - 1, *range(7, len(data), max(1, len(data) // 25))})
    for cut in cuts:
        assert_refused(post(client, path, data[:cut]), 400, "body")
    assert post(client, path, data).status_code == 200


def test_a_connection_closed_mid_body_is_400_naming_the_body_at_once(client):
    # The client announces the whole body, sends half and closes its side: the service must
    # neither wait for the rest until a timeout nor fail.
    data = json.dumps(hook_request()).encode()
    host, port = urlsplit(client.base_url).hostname, urlsplit(client.base_url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            f"POST {INVOKE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        started = time.monotonic()
        sock.sendall(head.encode() + data[: len(data) // 2])
        sock.shutdown(socket.SHUT_WR)
        status, body, elapsed = read_response(sock, started)
    assert status == 400, body
    assert elapsed < 1.0
    assert "body" in [e for issue in body["issue"] for e in issue.get("expression", [])]


BROKEN_CHUNKS = {
    "chunk longer than its size": b'5\r\n{"hook": 1}\r\n0\r\n\r\n',
    "chunk size not hexadecimal": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk cut short": b'ffff\r\n{"hook": ',
}


@pytest.mark.parametrize("framing", BROKEN_CHUNKS, ids=list(BROKEN_CHUNKS))
def test_a_chunked_body_with_broken_framing_is_400_naming_the_body(client, framing):
    host, port = urlsplit(client.base_url).hostname, urlsplit(client.base_url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            f"POST {INVOKE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        started = time.monotonic()
        sock.sendall(head.encode() + BROKEN_CHUNKS[framing])
        sock.shutdown(socket.SHUT_WR)
        status, body, elapsed = read_response(sock, started)
    assert status == 400, body
    assert body["issue"][0]["expression"] == ["body"]
    assert elapsed < 1.0


# --------------------------------------------------------------------------- deep nesting


def nested(depth: int, kind: str) -> str:
    if kind == "arrays":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


PLACES = {
    "in a prefetch resource": lambda r: r["prefetch"]["patient"],
    "in a prefetch CodeableConcept": lambda r: r["prefetch"]["conditions"]["entry"][0]["resource"][
        "code"
    ],
    "in the context": lambda r: r["context"],
}


def with_nesting(place: str, depth: int, kind: str) -> bytes:
    request = hook_request("cramps-only")
    PLACES[place](request)["zzDeep"] = "__DEEP__"
    return json.dumps(request).replace('"__DEEP__"', nested(depth, kind)).encode()


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("place", PLACES)
def test_nesting_beyond_the_parser_inside_a_request_is_400_naming_the_body(client, place, kind):
    for depth in (1_200, 100_000):
        assert_refused(post(client, INVOKE, with_nesting(place, depth, kind)), 400, "body")


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("place", PLACES)
def test_nesting_the_parser_accepts_in_an_unknown_field_changes_no_card(client, place, kind):
    # Just under the parser's limit: no later step (schema, FHIR check, cards) may fall over.
    response = post(client, INVOKE, with_nesting(place, 900, kind))
    assert response.status_code == 200, response.text
    assert rule_ids(response) == load_scenario("cramps-only")[1]["rule_ids"]


def test_nesting_beyond_the_parser_in_feedback_is_400_naming_the_body(client):
    body = feedback_body()
    body["feedback"][0]["zzDeep"] = "__DEEP__"
    data = json.dumps(body).replace('"__DEEP__"', nested(100_000, "arrays")).encode()
    assert_refused(post(client, FEEDBACK, data), 400, "body")


# --------------------------------------------------------------------------- 50 MB bodies


def read_response(sock: socket.socket, started: float) -> tuple[int, dict, float]:
    """Status, JSON body and seconds until the whole answer had arrived."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer: {received[:200]!r}")
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    assert headers["content-type"].startswith("application/json")
    return int(lines[0].split()[1]), json.loads(rest[:length]), time.monotonic() - started


def send_huge(base_url: str, path: str, size: int, chunked: bool) -> tuple[int, dict, float]:
    """POST `size` bytes as a client that keeps sending until the server answers."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\nConnection: close\r\n\r\n"
    ).encode()
    piece = b'{"hook": "patient-view", "x": "' + b"x" * (256 * 1024)
    with socket.create_connection((host, port), timeout=20) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answered = threading.Event()

        def pump() -> None:
            sent = 0
            try:
                while sent < size and not answered.is_set():
                    data = piece[: size - sent]
                    sock.sendall(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                    sent += len(data)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server answered and closed: as it may

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        try:
            return read_response(sock, started)
        finally:
            answered.set()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", [INVOKE, FEEDBACK], ids=["invoke", "feedback"])
def test_a_50_mb_body_is_413_quickly(client, path, chunked):
    status, body, elapsed = send_huge(client.base_url, path, FIFTY_MB, chunked)
    assert status == 413, body
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["body"]
    assert elapsed < 2.0
    assert post(client, path, json.dumps(BODIES[path]()).encode()).status_code == 200


def memory_of_workers(service) -> dict[int, tuple[int, int]]:
    """VmRSS and VmHWM (peak) in kB of each gunicorn worker: the children of the master."""
    memory = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent != service.process.pid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        memory[int(stat.parent.name)] = (
            int(fields["VmRSS"].split()[0]),
            int(fields["VmHWM"].split()[0]),
        )
    return memory


def every_fault_once(client) -> None:
    """One of each fault of this module, each refused."""
    for path in (INVOKE, FEEDBACK):
        for chunked in (False, True):
            assert send_huge(client.base_url, path, FIFTY_MB, chunked)[0] == 413
        data = json.dumps(BODIES[path]()).encode()
        assert post(client, path, data[: len(data) // 2]).status_code == 400
        assert post(client, path, data, {"Content-Type": "text/plain"}).status_code == 415
        assert post(client, path, data.replace(b"o", b"\xf6", 1)).status_code == 400
    deep = with_nesting("in the context", 100_000, "arrays")
    assert post(client, INVOKE, deep).status_code == 400
    assert post(client, INVOKE, many_prefetch_keys(5_000)).status_code == 400


def test_faults_leave_worker_memory_bounded(client, service):
    # Warm every worker up (imports, caches, connection pools), then take the baseline.
    for _ in range(3):
        every_fault_once(client)
        for _ in range(10):
            assert post(client, INVOKE, json.dumps(hook_request()).encode()).status_code == 200
    before = memory_of_workers(service)
    assert len(before) >= 2, before

    for _ in range(5):
        every_fault_once(client)

    after = memory_of_workers(service)
    assert after.keys() == before.keys(), "a worker died and was replaced"
    for pid, (rss, peak) in after.items():
        # VmHWM is the peak: had any of the 20 requests of 50 MB been read whole, it would have
        # risen by 50 MB, even if the memory was given back since.
        assert rss - before[pid][0] < MEMORY_GROWTH_KB, (pid, before[pid], (rss, peak))
        assert peak - before[pid][1] < MEMORY_GROWTH_KB, (pid, before[pid], (rss, peak))


# --------------------------------------------------------------------------- Content-Type

WRONG_TYPES = [
    "text/plain",
    "text/json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
]


@pytest.mark.parametrize("content_type", WRONG_TYPES)
@pytest.mark.parametrize("path", [INVOKE, FEEDBACK], ids=["invoke", "feedback"])
def test_a_body_that_is_not_declared_json_is_415_naming_the_content_type(
    client, path, content_type
):
    data = json.dumps(BODIES[path]()).encode()
    response = post(client, path, data, {"Content-Type": content_type})
    assert_refused(response, 415, "Content-Type")
    assert content_type.split(";")[0] in response.json()["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------- not Unicode


def _encoded(path: str, how: str) -> bytes:
    text = json.dumps(BODIES[path](), ensure_ascii=False)
    marker = '"2026-11-20T12:05:00Z"' if path == FEEDBACK else '"Practitioner/example-clinician"'
    assert marker in text
    if how == "latin-1":
        return text.replace(marker, '"Müller"').encode("latin-1")
    if how == "utf-16 with a byte-order mark":
        return text.encode("utf-16")
    if how == "utf-8 byte-order mark":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "overlong encoding":
        return text.encode().replace(b"o", b"\xc1\xaf", 1)  # "o" in two bytes
    if how == "surrogate encoded in utf-8":
        return text.encode().replace(marker.encode(), b'"\xed\xa0\x80"')
    if how == "unpaired surrogate escape":
        return text.replace(marker, '"\\ud800x"').encode()
    if how == "unpaired surrogate escape in a key":
        return text[:-1].encode() + b', "\\udfffzz": 1}'
    if how == "NaN":
        return text[:-1].encode() + b', "zz": NaN}'
    if how == "Infinity":
        return text[:-1].encode() + b', "zz": -Infinity}'
    raise AssertionError(how)


NOT_UNICODE = [
    "latin-1",
    "utf-16 with a byte-order mark",
    "utf-8 byte-order mark",
    "overlong encoding",
    "surrogate encoded in utf-8",
    "unpaired surrogate escape",
    "unpaired surrogate escape in a key",
    "NaN",
    "Infinity",
]


@pytest.mark.parametrize("how", NOT_UNICODE)
@pytest.mark.parametrize("path", [INVOKE, FEEDBACK], ids=["invoke", "feedback"])
def test_a_body_that_is_not_unicode_json_is_400_naming_the_body(client, path, how):
    assert_refused(post(client, path, _encoded(path, how)), 400, "body")


def test_a_surrogate_pair_escape_is_one_character_and_accepted(client):
    request = hook_request("cramps-only")
    request["prefetch"]["patient"]["name"][0]["family"] = "😀"  # json.dumps: \ud83d\ude00
    response = post(client, INVOKE, json.dumps(request).encode())
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- many keys


def many_prefetch_keys(count: int) -> bytes:
    request = hook_request("cramps-only")
    for index in range(count):
        request["prefetch"][f"extra{index}"] = None
    return json.dumps(request).encode()


def test_thousands_of_prefetch_keys_are_400_naming_prefetch_quickly(client):
    started = time.monotonic()
    response = post(client, INVOKE, many_prefetch_keys(5_000))
    assert time.monotonic() - started < 1.0
    assert_refused(response, 400, "prefetch")


def test_thousands_of_feedback_items_are_400_naming_feedback(client):
    items = feedback_body()["feedback"] * 5_000
    response = post(client, FEEDBACK, json.dumps({"feedback": items}).encode())
    assert_refused(response, 400, "feedback")


def test_a_refused_prefetch_does_not_echo_the_patients_data(client):
    response = post(client, INVOKE, many_prefetch_keys(100))
    assert response.status_code == 400
    assert "1971-03-14" not in response.text  # the example patient's birth date


# --------------------------------------------------------------------------- duplicate ids


def potassium_request() -> tuple[dict, dict]:
    request = hook_request("electrolyte-potassium-low")
    entries = request["prefetch"]["observations"]["entry"]
    [entry] = [e for e in entries if e["resource"]["code"]["coding"][0]["code"] == "2823-3"]
    return request, entry


def test_two_different_resources_with_one_id_in_a_bundle_are_400_naming_the_key(client):
    request, entry = potassium_request()
    other = copy.deepcopy(entry)
    other["resource"]["valueQuantity"]["value"] = 4.4  # which of 3.4 and 4.4 is true?
    request["prefetch"]["observations"]["entry"].append(other)

    response = post(client, INVOKE, json.dumps(request).encode())

    assert response.status_code == 400, response.text
    assert outcome_fields(response) == ["prefetch.observations"]
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "entry[" in diagnostics and "different content" in diagnostics
    assert entry["resource"]["id"] not in diagnostics  # an id may be an MRN: never echoed


def test_the_same_resource_twice_in_a_bundle_is_used_once(client):
    request, entry = potassium_request()
    request["prefetch"]["observations"]["entry"].append(copy.deepcopy(entry))
    request["prefetch"]["conditions"]["entry"] *= 2

    response = post(client, INVOKE, json.dumps(request).encode())

    assert response.status_code == 200, response.text
    assert rule_ids(response) == load_scenario("electrolyte-potassium-low")[1]["rule_ids"]
    [card] = response.json()["cards"]
    lines = [ln for ln in card["detail"].splitlines() if ln.startswith("- Low: Potassium")]
    # One result, listed once: a repeated finding would read "x2".
    assert len(lines) == 1 and "x2" not in lines[0], lines


def test_one_id_in_two_resource_types_is_not_a_duplicate(client):
    request, entry = potassium_request()
    condition = request["prefetch"]["conditions"]["entry"][0]["resource"]
    twin = copy.deepcopy(entry)
    twin["resource"]["id"] = condition["id"]
    request["prefetch"]["conditions"]["entry"].append(twin)  # an Observation among Conditions
    assert post(client, INVOKE, json.dumps(request).encode()).status_code == 200


# --------------------------------------------------------------------------- FHIR fallback


def big_observation_bundle(request: dict, patient_id: str, total: int) -> bytes:
    """`total` entries: heart rates, then the scenario's own labs (read only if all are)."""
    labs = [e["resource"] for e in request["prefetch"]["observations"]["entry"]]
    fillers = [heart_rate(patient_id, index) for index in range(total - len(labs))]
    for index, filler in enumerate(fillers):
        filler["id"] = f"{patient_id}-hr-{index}"
    entries = [{"resource": r} for r in fillers + labs]
    return json.dumps(
        {"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries}
    ).encode()


def serve_bytes(payload: bytes):
    def handler(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    return handler


def test_a_bundle_of_10000_entries_from_the_fhir_server_is_read_whole_in_time(client, fault_server):
    request, expected, patient_id = unique_scenario("electrolyte-potassium-low")
    payload = big_observation_bundle(request, patient_id, 10_000)
    fake = FakeFhir(request, faults={"Observation": serve_bytes(payload)})
    body = with_server(request, serve_fake(fault_server, fake), "tok-big")
    del body["prefetch"]["observations"]

    started = time.monotonic()
    response = client.call(PV, body)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert elapsed < DEADLINE_S
    # The low potassium is the 10,000th entry: its card says every entry was read, and a
    # complete answer of exactly the cap is not reported as cut.
    assert rule_ids(response) == expected["rule_ids"]
    assert "stopped reading" not in card_details(response)


def test_a_bundle_beyond_10000_entries_is_cut_and_the_cut_is_named(client, fault_server):
    request, _expected, patient_id = unique_scenario("electrolyte-potassium-low")
    payload = big_observation_bundle(request, patient_id, 12_000)
    fake = FakeFhir(request, faults={"Observation": serve_bytes(payload)})
    body = with_server(request, serve_fake(fault_server, fake), "tok-big")
    del body["prefetch"]["observations"]

    started = time.monotonic()
    response = client.call(PV, body)

    assert response.status_code == 200, response.text
    assert time.monotonic() - started < IN_TIME_S
    assert rule_ids(response) == ["cramp-labs-missing"]  # the labs came after the cut
    assert "observations: stopped reading after 10000 entries" in card_details(response)


def test_an_unpaired_surrogate_from_the_fhir_server_is_answered_as_json(client, fault_server):
    # A patient with sciatica: the association card lists the reported cramps by name.
    request, expected, _patient_id = unique_scenario("mixed-three-causes")
    fake = FakeFhir(request)
    conditions = fake.by_type["Condition"]
    cramp = next(c for c in conditions if c["code"]["coding"][0]["code"] in {"M62.831", "R25.2"})
    cramp["code"]["coding"][0]["display"] = "Cramp \ud800"  # sent as the escape \ud800
    fake.faults["Condition"] = lambda h: send_json(
        h,
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": c} for c in conditions],
        },
    )
    body = with_server(request, serve_fake(fault_server, fake), "tok-s")
    del body["prefetch"]["conditions"]

    response = client.call(PV, body)

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    assert "Cramp \ud800" in card_details(response)


@pytest.mark.parametrize("coding", [-1.7976931348623157e308, 1, "x", {"code": "1"}, True])
def test_a_draft_order_whose_coding_is_not_a_list_is_answered_never_a_500(client, coding):
    """Found by the chart fuzzer: a draft order's `code.coding` sent as a number stopped the
    evaluation with a TypeError. Such an order has no coding to check: the other cards stand."""
    request, expected = load_scenario("v2-scoping-low-potassium-order-sign")
    request["hookInstance"] = str(uuid.uuid4())
    baseline = client.call(expected["service"], request)
    assert baseline.status_code == 200, baseline.text
    broken = copy.deepcopy(request)
    broken["hookInstance"] = str(uuid.uuid4())
    for entry in broken["context"]["draftOrders"]["entry"]:
        entry["resource"]["code"]["coding"] = coding
    answer = client.call(expected["service"], broken)
    assert answer.status_code in (200, 400), answer.text
    assert "Traceback" not in answer.text


def test_status_and_value_concepts_whose_coding_is_not_a_list_are_answered_never_a_500(client):
    """Found by the chart fuzzer too: a Condition's clinicalStatus with `coding: 1`. Every
    CodeableConcept the chart reads takes the same path (terminology.coding_list)."""
    request, expected = load_scenario("association-both-features")
    request["hookInstance"] = str(uuid.uuid4())
    for bundle in request["prefetch"].values():
        for entry in (bundle or {}).get("entry") or []:
            resource = entry["resource"]
            for key in ("clinicalStatus", "verificationStatus", "valueCodeableConcept"):
                if key in resource:
                    resource[key]["coding"] = 1
    answer = client.call(expected["service"], request)
    assert answer.status_code in (200, 400), answer.text
    assert "Traceback" not in answer.text
