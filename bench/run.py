"""Benchmark: the service against the framework ceiling, evaluation cost, FHIR fallback, memory.

Run from the repository root after the README's set-up:  .venv/bin/python bench/run.py
(needs `wrk`: apt-get install wrk). Writes bench/results.json and bench/results.md.

1. Throughput and latency under wrk (8 connections) of the service (gunicorn, authentication
   on, every request with its own pre-signed ES384 token) and of a ceiling app (same gunicorn
   settings, a Flask endpoint that only parses the body), for a typical patient and for a large
   realistic record, both with full prefetch.
2. Server-side evaluation time for records of 100, 1,000 and 10,000 Observations, beside the
   time json.loads takes on the same body.
3. The FHIR fallback (no prefetch) against sekmet-fhir behind a proxy adding 150 ms per request:
   total time / slowest single query.
4. Worker memory (RSS) before and after 20,000 requests.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
import requests  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from servers import free_port, start_fhir_server, stop, wait_until_up  # noqa: E402

from cds_service import fhirdates  # noqa: E402
from cds_service.engine import Engine  # noqa: E402
from cds_service.keys import make_key_pair  # noqa: E402
from cds_service.services import SERVICES  # noqa: E402
from cds_service.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
NOW = "2026-11-20T12:00:00Z"
SERVICE_ID = "cramp-sciatica-patient-view"
ISSUER = "https://bench.local"
TYPICAL = ROOT / "fhir_examples" / "scenarios" / "mixed-three-causes.request.json"
LARGE = ROOT / "fhir_examples" / "realistic" / "large-record.request.json.gz"
CONNECTIONS, WRK_THREADS = 8, 2
FHIR_LATENCY_S = 0.150


# --- tokens ---------------------------------------------------------------------------------


def _sign_chunk(args: tuple[bytes, str, str, int]) -> list[str]:
    pem, kid, aud, count = args
    key = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    return [
        jwt.encode(
            {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex},
            key,
            algorithm="ES384",
            headers={"kid": kid, "typ": "JWT"},
        )
        for _ in range(count)
    ]


def sign_tokens(key_dir: Path, kid: str, aud: str, count: int) -> list[str]:
    pem = (key_dir / "private-key.pem").read_bytes()
    chunks = [(pem, kid, aud, count // 4 + 1) for _ in range(4)]
    with Pool(os.cpu_count() or 2) as pool:
        return [t for chunk in pool.map(_sign_chunk, chunks) for t in chunk][:count]


# --- processes ------------------------------------------------------------------------------


def start(command: list[str], env: dict, workdir: Path, health: str, name: str):
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed at exit
    process = subprocess.Popen(
        command, cwd=workdir, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    wait_until_up(health, process, workdir / f"{name}.log", seconds=60)
    return process


def worker_rss_kb(master_pid: int) -> int:
    children = subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True
    ).stdout.split()
    total = 0
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return total


# --- 1. wrk ---------------------------------------------------------------------------------


def run_wrk(url: str, body: Path, tokens: Path | None, seconds: int) -> dict:
    result = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "post.lua"),
            url,
            "--",
            str(body),
            str(tokens) if tokens else "",
            str(WRK_THREADS),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    data["rps"] = data["requests"] / data["seconds"]
    return data


# --- 3. evaluation scaling ------------------------------------------------------------------

_CODES = [
    ("2823-3", "Potassium", 4.1, "mmol/L", "laboratory"),
    ("2951-2", "Sodium", 139, "mmol/L", "laboratory"),
    ("2345-7", "Glucose", 96, "mg/dL", "laboratory"),
    ("718-7", "Hemoglobin", 13.5, "g/dL", "laboratory"),
    ("8867-4", "Heart rate", 72, "/min", "vital-signs"),
    ("8480-6", "Systolic blood pressure", 124, "mm[Hg]", "vital-signs"),
    ("29463-7", "Body weight", 70, "kg", "vital-signs"),
    ("8310-5", "Body temperature", 36.8, "Cel", "vital-signs"),
]


def record_with(observations: int) -> dict:
    body = json.loads(TYPICAL.read_text())
    pid = body["context"]["patientId"]
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    entries = body["prefetch"]["observations"]["entry"]
    for i in range(observations - len(entries)):
        code, name, value, unit, category = _CODES[i % len(_CODES)]
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"bench-{i}",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": category,
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": code, "display": name}]
                    },
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": (now - timedelta(days=100 + i % 700)).isoformat(),
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                }
            }
        )
    return body


def evaluation_scaling() -> list[dict]:
    engine = Engine(Settings(fixed_now=fhirdates.parse(NOW)))
    service = next(s for s in SERVICES if s.id == SERVICE_ID)
    rows = []
    for size, runs in ((100, 60), (1_000, 20), (10_000, 7)):
        raw = json.dumps(record_with(size)).encode()
        engine.evaluate(service, json.loads(raw))  # warm up
        evaluate, parse = [], []
        for _ in range(runs):
            started = time.perf_counter()
            body = json.loads(raw)
            parse.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.evaluate(service, body)
            evaluate.append(time.perf_counter() - started)
        e, p = statistics.median(evaluate) * 1000, statistics.median(parse) * 1000
        rows.append(
            {
                "observations": size,
                "bytes": len(raw),
                "evaluate_ms": round(e, 3),
                "json_loads_ms": round(p, 3),
                "ratio": round(e / p, 2),
            }
        )
    engine.close()
    return rows


# --- 4. FHIR fallback -----------------------------------------------------------------------


def delaying_proxy(target: str) -> tuple[ThreadingHTTPServer, str]:
    """A reverse proxy on 127.0.0.1 that adds a fixed latency to every FHIR request."""

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(FHIR_LATENCY_S)
            upstream = target + self.path.removeprefix("/fhir")
            with urllib.request.urlopen(upstream, timeout=10) as answer:  # noqa: S310
                payload = answer.read()
                status = answer.status
            payload = payload.replace(target.encode(), f"{base}/fhir".encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{base}/fhir"


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    parser.add_argument("--rss-requests", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    results: dict = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "connections": CONNECTIONS,
    }
    kid = make_key_pair(work / "keys", "ES384", "bench-1")
    fhir = start_fhir_server(work)
    proxy, proxy_url = delaying_proxy(fhir.base_url)
    trust = {
        "issuers": [
            {
                "iss": ISSUER,
                "jwks": json.loads((work / "keys" / "jwks.json").read_text()),
                "fhir_servers": [proxy_url],
            }
        ],
        "allow_http_loopback": True,
    }
    (work / "trust.json").write_text(json.dumps(trust))
    port, ceiling_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "CDS_TRUST_CONFIG": str(work / "trust.json"),
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_FIXED_NOW": NOW,
        "CDS_DATA_DIR": str(work / "data"),
        "CDS_LOG_LEVEL": "WARNING",
    }
    workers = str(os.cpu_count() or 1)
    service = start(
        [str(BIN / "cds-service"), "serve", "--port", str(port)],
        env,
        work,
        f"{base}/health",
        "service",
    )
    ceiling = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(ROOT / "bench"),
            "-b",
            f"127.0.0.1:{ceiling_port}",
            "-w",
            workers,
            "-k",
            "gevent",  # as `cds-service serve` runs (server.py)
            "--worker-connections",
            "1000",
            "--keep-alive",
            "5",
            "ceiling:app",
        ],
        cwd=work,
        stdout=open(work / "ceiling.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    wait_until_up(f"http://127.0.0.1:{ceiling_port}/health", ceiling, work / "ceiling.log")
    url = f"{base}/cds-services/{SERVICE_ID}"
    ceiling_url = f"http://127.0.0.1:{ceiling_port}/cds-services/{SERVICE_ID}"
    try:
        bodies = {"typical": TYPICAL.read_bytes(), "large": gzip.decompress(LARGE.read_bytes())}
        results["load"] = {}
        for name, raw in bodies.items():
            body_path = work / f"{name}.json"
            body_path.write_bytes(raw)
            print(f"signing tokens for the {name} run ...", flush=True)
            tokens = sign_tokens(work / "keys", kid, url, args.seconds * 3000)
            token_path = work / f"{name}.tokens"
            token_path.write_text("\n".join(tokens) + "\n")
            print(f"wrk: {name} ...", flush=True)
            svc = run_wrk(url, body_path, token_path, args.seconds)
            top = run_wrk(ceiling_url, body_path, None, args.seconds)
            results["load"][name] = {
                "body_bytes": len(raw),
                "service": svc,
                "ceiling": top,
                "ratio": round(svc["rps"] / top["rps"], 3),
            }
        print("evaluation scaling ...", flush=True)
        results["evaluation"] = evaluation_scaling()

        print("FHIR fallback ...", flush=True)
        typical = json.loads(TYPICAL.read_text())
        for value in typical["prefetch"].values():
            for entry in value.get("entry", [{"resource": value}]):
                fhir.put(entry["resource"])
        fallback = copy.deepcopy(typical)
        del fallback["prefetch"]
        fallback["fhirServer"] = proxy_url
        fallback["fhirAuthorization"] = {
            "access_token": "bench-access-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "bench",
        }
        service_def = next(s for s in SERVICES if s.id == SERVICE_ID)
        queries = [
            q.template.replace("{{context.patientId}}", typical["context"]["patientId"])
            for q in service_def.prefetch.values()
        ]
        session = requests.Session()
        totals, slowest = [], []
        tokens = iter(sign_tokens(work / "keys", kid, url, 12))
        for _ in range(10):
            started = time.perf_counter()
            answer = session.post(
                url, json=fallback, timeout=10, headers={"Authorization": f"Bearer {next(tokens)}"}
            )
            totals.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            singles = []
            for query in queries:
                started = time.perf_counter()
                session.get(f"{proxy_url}/{query}", timeout=10).raise_for_status()
                singles.append(time.perf_counter() - started)
            slowest.append(max(singles))
        total_ms, slow_ms = statistics.median(totals) * 1000, statistics.median(slowest) * 1000
        results["fallback"] = {
            "added_latency_ms": FHIR_LATENCY_S * 1000,
            "queries": len(queries),
            "total_ms": round(total_ms, 1),
            "slowest_query_ms": round(slow_ms, 1),
            "ratio": round(total_ms / slow_ms, 3),
        }

        print(f"memory over {args.rss_requests:,} requests ...", flush=True)
        tokens = sign_tokens(work / "keys", kid, url, args.rss_requests + 500)
        raw = bodies["typical"]
        local = threading.local()

        def send(token: str) -> int:
            http = getattr(local, "http", None) or requests.Session()
            local.http = http
            return http.post(
                url,
                data=raw,
                timeout=30,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            ).status_code

        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(send, tokens[:500]))  # warm up
            before = worker_rss_kb(service.pid)
            statuses = list(pool.map(send, tokens[500:]))
        after = worker_rss_kb(service.pid)
        results["memory"] = {
            "requests": args.rss_requests,
            "failed": sum(s != 200 for s in statuses),
            "rss_before_kb": before,
            "rss_after_kb": after,
            "growth_pct": round((after - before) / before * 100, 2),
        }
    finally:
        stop(service)
        stop(ceiling)
        stop(fhir.process)
        proxy.shutdown()
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (ROOT / "bench" / "results.md").write_text(table + "\n")
    print(table)
    return 0


def render(r: dict) -> str:
    lines = [
        f"Benchmark of {r['date']} on {r['machine']}; wrk, {r['connections']} connections.",
        "",
        "| load (full prefetch) | service req/s | p50 ms | p99 ms | ceiling req/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, load in r["load"].items():
        s, c = load["service"], load["ceiling"]
        lines.append(
            f"| {name} ({load['body_bytes']:,} B) | {s['rps']:.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {c['rps']:.0f} | {load['ratio']:.0%} |"
        )
    lines += [
        "",
        "| Observations | body | evaluate ms | json.loads ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for row in r["evaluation"]:
        lines.append(
            f"| {row['observations']:,} | {row['bytes']:,} B | {row['evaluate_ms']:.2f} | "
            f"{row['json_loads_ms']:.2f} | {row['ratio']:.2f}x |"
        )
    f = r["fallback"]
    m = r["memory"]
    lines += [
        "",
        f"FHIR fallback ({f['queries']} queries, +{f['added_latency_ms']:.0f} ms each): "
        f"total {f['total_ms']:.0f} ms / slowest query {f['slowest_query_ms']:.0f} ms = "
        f"{f['ratio']:.2f}x.",
        f"Worker RSS over {m['requests']:,} requests ({m['failed']} failed): "
        f"{m['rss_before_kb'] / 1024:.1f} MB -> {m['rss_after_kb'] / 1024:.1f} MB "
        f"({m['growth_pct']:+.1f} %).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
