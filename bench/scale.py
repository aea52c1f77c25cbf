"""Benchmark: one instance against two behind nginx, and the PostgreSQL + Redis stores against
the embedded SQLite ones (issue 14 point 7).

Run from the repository root after the README's set-up:  .venv/bin/python bench/scale.py
(needs wrk, nginx, and PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 for the
server-store rows; without them those rows say why they were skipped). Writes bench/scale.json.

Every row drives the same typical request as bench/run.py (mixed-three-causes, full prefetch)
with wrk (8 connections), authentication on, each request with its own pre-signed ES384 token;
nginx runs deploy/nginx.conf rendered with local ports (tests/cluster.py). Each setup gets fresh
stores (a new data directory; a new PostgreSQL database migrated with `cds-service db upgrade`
and a new Redis key prefix), so the same tokens serve every row. All processes share the
machine with wrk: on 2 cores a second instance adds no CPU, only a hop through nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from cluster import start_nginx  # noqa: E402
from run import CONNECTIONS, ISSUER, NOW, SERVICE_ID, TYPICAL, run_wrk, sign_tokens  # noqa: E402
from servers import (  # noqa: E402
    BIN,
    REDIS_TEST_URL,
    postgres_database,
    redis_prefix,
    start_service,
    stop,
)

from cds_service.keys import make_key_pair  # noqa: E402

PUBLIC_BASE_URL = "https://cds.bench.local"  # token audiences; the same for every setup
# (name, instances, workers per instance, through nginx, stores)
SETUPS = [
    ("1 instance, direct", 1, 2, False, "sqlite"),
    ("1 instance behind nginx", 1, 2, True, "sqlite"),
    ("2 instances behind nginx, 1 worker each", 2, 1, True, "sqlite"),
    ("2 instances behind nginx, 2 workers each", 2, 2, True, "sqlite"),
    ("1 instance, direct", 1, 2, False, "postgresql+redis"),
    ("2 instances behind nginx, 2 workers each", 2, 2, True, "postgresql+redis"),
]


@contextlib.contextmanager
def server_stores(work: Path):
    """The env for PostgreSQL + Redis: a fresh database, migrated, and a fresh key prefix."""
    with postgres_database("cds_bench") as url, redis_prefix() as prefix:
        env = {"CDS_DATABASE_URL": url, "CDS_REDIS_URL": REDIS_TEST_URL}
        env["CDS_LOG_HASH_KEY"] = "be" * 32  # one key for every instance of the run
        env["CDS_REDIS_KEY_PREFIX"] = prefix
        done = subprocess.run(
            [str(BIN / "cds-service"), "db", "upgrade"],
            env={**os.environ, **env, "CDS_DATA_DIR": str(work / "migrate")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cds-service db upgrade failed: {done.stderr}")
        yield env


def measure(setup: tuple, work: Path, env: dict, body: Path, tokens: Path, seconds: int) -> dict:
    name, count, workers, behind_nginx, stores = setup
    started, nginx = [], None
    try:
        with contextlib.ExitStack() as stack:
            if stores == "postgresql+redis":
                env = {**env, **stack.enter_context(server_stores(work))}
            for i in range(count):
                directory = work / f"instance-{i + 1}"
                directory.mkdir(parents=True)
                started.append(start_service(directory, env, workers=workers, auth=True))
            url = started[0].base_url
            if behind_nginx:
                nginx = start_nginx([s.base_url.removeprefix("http://") for s in started])
                url = nginx.url
            result = run_wrk(f"{url}/cds-services/{SERVICE_ID}", body, tokens, seconds)
    finally:
        if nginx:
            nginx.stop()
        for service in started:
            stop(service.process)
    return {
        "rps": round(result["rps"], 1),
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "errors": result["errors"],
        "non2xx": result["non2xx"],
        # What else ran on the machine meanwhile (wrk and the setup's own processes included).
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def summary(setup: tuple, runs: list[dict]) -> dict:
    """A setup's row: the median of its runs (each kept)."""
    name, count, workers, behind_nginx, stores = setup
    row = {
        "setup": name,
        "instances": count,
        "workers_each": workers,
        "nginx": behind_nginx,
        "stores": stores,
    }
    row["runs"] = runs
    measured = [run for run in runs if "skipped" not in run]
    if not measured:
        return {**row, "skipped": runs[0]["skipped"]}
    # A run with a failed request measured something else (an instance that did not start
    # answers errors very fast): it is kept, flagged, and left out of the median.
    good = [run for run in measured if run["errors"] + run["non2xx"] == 0]
    row["failed_runs"] = len(measured) - len(good)
    for key in ("rps", "p50_ms", "p99_ms"):
        row[key] = statistics.median(run[key] for run in good) if good else None
    return row


def render(results: dict) -> str:
    lines = [
        f"Scale-out benchmark of {results['date']} on {results['machine']}; wrk, "
        f"{results['connections']} connections, {results['seconds']} s per run, "
        f"median of {results['repeat']} run(s), auth on; 1-min load average during the runs "
        f"{results['load']}.",
        "",
        "| setup | stores | req/s | p50 ms | p99 ms | runs with errors (left out) |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['setup']} | {row['stores']} | skipped: {row['skipped']} ||||")
            continue
        if row["rps"] is None:
            lines.append(f"| {row['setup']} | {row['stores']} | every run failed ||||")
            continue
        lines.append(
            f"| {row['setup']} | {row['stores']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['failed_runs']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per row")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all setups (median)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "scale.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cds-scale-"))
    kid = make_key_pair(work / "keys", "ES384", "scale-1")
    jwks = json.loads((work / "keys" / "jwks.json").read_text())
    # run.sign_tokens signs as <ISSUER>/<alg> (one issuer per algorithm in bench/run.py)
    issuer = f"{ISSUER}/es384"
    (work / "trust.json").write_text(json.dumps({"issuers": [{"iss": issuer, "jwks": jwks}]}))
    env = {
        "CDS_TRUST_CONFIG": str(work / "trust.json"),
        "CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "CDS_FIXED_NOW": NOW,
        "CDS_LOG_LEVEL": "WARNING",
    }
    body = work / "typical.json"
    body.write_bytes(TYPICAL.read_bytes())
    print("signing tokens ...", flush=True)
    aud = f"{PUBLIC_BASE_URL}/cds-services/{SERVICE_ID}"
    tokens = work / "tokens"
    tokens.write_text("\n".join(sign_tokens(work / "keys", kid, aud, args.seconds * 2500)) + "\n")

    results = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "connections": CONNECTIONS,
        "seconds": args.seconds,
        "repeat": args.repeat,
    }
    runs: list[list[dict]] = [[] for _ in SETUPS]
    # Round after round over all setups, so that a burst of other work on a shared machine
    # falls on every setup alike rather than on one.
    for round_ in range(args.repeat):
        for number, setup in enumerate(SETUPS):
            print(f"wrk ({round_ + 1}/{args.repeat}): {setup[0]}, {setup[4]} ...", flush=True)
            workdir = work / f"setup-{number}-{round_}"
            try:
                run = measure(setup, workdir, env, body, tokens, args.seconds)
            except Exception as exc:  # a server the row needs is missing: say so, go on
                if type(exc).__name__ not in {"Skipped", "Failed", "RuntimeError"}:
                    raise
                run = {"skipped": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            runs[number].append(run)
    results["rows"] = [summary(setup, found) for setup, found in zip(SETUPS, runs, strict=True)]
    loads = [r["load_1min_after"] for found in runs for r in found if "skipped" not in r]
    for row in results["rows"]:
        for run in row["runs"]:
            if run.get("errors") or run.get("non2xx"):
                print(f"warning: a run of '{row['setup']}, {row['stores']}' had failed requests")
    results["load"] = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?"
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
