"""The `cds-service` command, run as an operator runs it: a subprocess of the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLE_NOW, EXAMPLES, load_scenario

from cds_service import __version__, validation

CLI = Path(sys.executable).parent / "cds-service"
REPO = Path(__file__).resolve().parent.parent


def run(*args: str, fixed_now: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    if fixed_now:
        env["CDS_FIXED_NOW"] = EXAMPLE_NOW
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def assert_one_line_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_version_prints_the_package_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cds-service {__version__}"


# --- evaluate -------------------------------------------------------------------------------


def test_evaluate_prints_the_expected_card_as_json():
    result = run(
        "evaluate",
        "fhir_examples/scenarios/cramps-only.request.json",
        "--now",
        EXAMPLE_NOW,
        fixed_now=False,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert validation.problems("response", response) == []
    _, expected = load_scenario("cramps-only")
    assert [c["source"]["topic"]["code"] for c in response["cards"]] == expected["rule_ids"]
    assert all(card["uuid"] for card in response["cards"])


def test_evaluate_now_decides_what_counts_as_recent():
    # The cramp began 2026-11-15; a year later it no longer counts as reported cramps.
    result = run(
        "evaluate",
        "fhir_examples/scenarios/cramps-only.request.json",
        "--now",
        "2027-11-20T12:00:00Z",
        fixed_now=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cards": []}


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _invalid_request() -> bytes:
    request, _ = load_scenario("cramps-only")
    del request["context"]["patientId"]
    return json.dumps(request).encode()


BAD_FILES = {
    "truncated-json": (b'{"hook": "patient-view", "context": {', "not valid JSON"),
    "not-utf-8": (b'{"hook": "patient-view\xff"}', "UTF-8"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "nested"),
    "not-a-hook-request": (b"[1, 2, 3]", "hook"),
    "request-missing-patientId": (_invalid_request(), "context.patientId"),
}


@pytest.mark.parametrize(("content", "says"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_evaluate_of_a_bad_file_fails_with_one_line(tmp_path, content, says):
    path = _write(tmp_path, "request.json", content)
    line = assert_one_line_failure(run("evaluate", str(path), "--now", EXAMPLE_NOW))
    assert says in line
    assert line.startswith("cds-service: ")


def test_evaluate_of_a_missing_file_fails_with_one_line(tmp_path):
    missing = tmp_path / "no-such-request.json"
    line = assert_one_line_failure(run("evaluate", str(missing)))
    assert str(missing) in line


def test_evaluate_with_a_bad_now_fails_with_one_line():
    line = assert_one_line_failure(
        run("evaluate", str(EXAMPLES / "cramps-only.request.json"), "--now", "last tuesday")
    )
    assert "--now" in line


# --- replay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cramps_only_patient(fhir_server) -> str:
    """The cramps-only scenario's patient, living on the real FHIR server."""
    request, _ = load_scenario("cramps-only")
    for value in request["prefetch"].values():
        if value["resourceType"] == "Bundle":
            for entry in value.get("entry", []):
                fhir_server.put(entry["resource"])
        else:
            fhir_server.put(value)
    return request["context"]["patientId"]


def test_replay_prints_a_readable_summary_naming_the_rule(fhir_server, cramps_only_patient):
    result = run(
        "replay",
        "--fhir-server",
        fhir_server.base_url,
        "--patient",
        cramps_only_patient,
        "--hook",
        "patient-view",
    )
    assert result.returncode == 0, result.stderr
    assert f"Patient/{cramps_only_patient}: 1 card(s)" in result.stdout
    assert "rule: cramp-labs-missing" in result.stdout


def test_replay_json_is_a_schema_valid_response(fhir_server, cramps_only_patient):
    result = run(
        "replay",
        "--fhir-server",
        fhir_server.base_url,
        "--patient",
        cramps_only_patient,
        "--hook",
        "patient-view",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert validation.problems("response", response) == []
    assert [c["source"]["topic"]["code"] for c in response["cards"]] == ["cramp-labs-missing"]


def test_replay_reads_the_patient_from_the_fhir_server(fhir_server, cramps_only_patient):
    mark = fhir_server.mark()
    result = run("replay", "--fhir-server", fhir_server.base_url, "--patient", cramps_only_patient)
    assert result.returncode == 0, result.stderr
    urls = [url for _, url, _ in fhir_server.requests_since(mark)]
    assert any(f"/Patient/{cramps_only_patient}" in url for url in urls), urls
    assert any("/Condition" in url for url in urls), urls


def test_replay_of_an_unknown_patient_fails_with_one_line(fhir_server):
    line = assert_one_line_failure(
        run("replay", "--fhir-server", fhir_server.base_url, "--patient", "no-such-patient")
    )
    # The FHIR server's own text is never passed on (issue 13): its status and issue code are.
    assert "prefetch 'patient'" in line and "HTTP 404" in line and "not-found" in line


def test_replay_against_an_unreachable_server_fails_with_one_line():
    from servers import free_port

    base = f"http://127.0.0.1:{free_port()}/fhir"
    assert_one_line_failure(run("replay", "--fhir-server", base, "--patient", "cramps-only"))
