"""What the Prometheus metrics cost each request: the two hooks of cds_service/metrics.py (the
before_request that notes the start, the after_request that counts), timed in a request
context, with prometheus_client in its multiprocess mode as `serve` runs it. Also one FHIR GET's
record. Run from the repository root:  .venv/bin/python bench/metrics_overhead.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

N = 50_000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cds-metrics-bench-") as scratch:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
        (Path(scratch) / "data").mkdir()
        run(Path(scratch) / "data")


def run(data_dir: Path) -> None:
    from flask import Response, g, request

    from cds_service import metrics
    from cds_service.app import create_app
    from cds_service.settings import Settings

    app = create_app(Settings(auth_enabled=False, data_dir=data_dir))
    service = "cramp-sciatica-patient-view"
    with app.test_request_context(f"/cds-services/{service}", method="POST"):
        request.url_rule = app.url_map._rules_by_endpoint["cds.invoke"][0]
        g.service_id = service
        response = Response("{}")
        for cards in ([], [("uuid-1", "cramp-labs-missing", "info")] * 2):
            g.cards = cards
            for _ in range(1000):  # warm: label children made, files mapped
                metrics._begin(())
                metrics._count(response)
            started = time.perf_counter()
            for _ in range(N):
                metrics._begin(())
                metrics._count(response)
            per = (time.perf_counter() - started) / N * 1e6
            print(f"request hooks, {len(cards)} cards: {per:.2f} µs per request")
    started = time.perf_counter()
    for _ in range(N):
        metrics.fhir_request("ok", 0.0)
    print(f"one FHIR GET recorded: {(time.perf_counter() - started) / N * 1e6:.2f} µs")


if __name__ == "__main__":
    sys.exit(main())
