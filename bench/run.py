"""Benchmark: every target of issue 15, measured and judged side by side in one run.

Run from the repository root after the README's set-up:  .venv/bin/python bench/run.py
(`--quick` for short wrk runs while iterating). Needs `wrk` (apt-get install wrk). Writes
bench/results.json and bench/results.md. The full run (about 8 minutes) measures the typical
targets on both kinds of stores (`--stores embedded` or `--stores server` for one: server is
PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379, a fresh database and key prefix, as
bench/scale.py makes them) and then runs bench/scale.py (`--no-scale` to leave it out).

1. Throughput and latency under wrk (8 connections, full prefetch) of the service and of the
   framework ceiling (bench/ceiling.py: same Flask, same gunicorn settings from
   cds_service.server.gunicorn_options, only parses the body), each service run followed by
   a ceiling run: the typical request with --no-auth, then with a fresh pre-signed token per
   call (ES384, RS384, ES256), and a large realistic record.
2. In process: evaluating the typical request against json.loads + json.dumps of its body;
   the large record against json.loads; 100, 1,000 and 10,000 Observations (linear?).
3. The text fallback: calls of the note reader on record names per request (only for
   records with unknown codes, once per distinct text).
4. The FHIR fallback (no prefetch) against sekmet-fhir behind a proxy adding 150 ms per
   request: total time / slowest single query.
5. Worker memory (RSS) before and after 20,000 requests.
"""

from __future__ import annotations

import argparse
import contextlib
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

from cds_service import chart as chart_module  # noqa: E402
from cds_service import fhirdates, notes  # noqa: E402
from cds_service.engine import Engine  # noqa: E402
from cds_service.keys import make_key_pair  # noqa: E402
from cds_service.server import gunicorn_options  # noqa: E402
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
ALGORITHMS = ("ES384", "RS384", "ES256")
WORKER_CLASS, THREADS = "gevent", 4  # as `cds-service serve` runs by default
SERVER_STORES = " [PostgreSQL + Redis]"  # the label's tail of the runs on the server stores
LINEAR_FACTOR = 1.5  # time per Observation at 10,000 within this factor of that at 1,000


# --- tokens ---------------------------------------------------------------------------------


def _sign_chunk(args: tuple[bytes, str, str, int, str]) -> list[str]:
    pem, kid, aud, count, alg = args
    key = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    return [
        jwt.encode(
            {
                "iss": f"{ISSUER}/{alg.lower()}",
                "aud": aud,
                "iat": now,
                "exp": now + 3600,
                "jti": uuid.uuid4().hex,
            },
            key,
            algorithm=alg,
            headers={"kid": kid, "typ": "JWT"},
        )
        for _ in range(count)
    ]


def sign_tokens(key_dir: Path, kid: str, aud: str, count: int, alg: str = "ES384") -> list[str]:
    pem = (key_dir / "private-key.pem").read_bytes()
    chunks = [(pem, kid, aud, count // 4 + 1, alg) for _ in range(4)]
    with Pool(os.cpu_count() or 2) as pool:
        return [t for chunk in pool.map(_sign_chunk, chunks) for t in chunk][:count]


def make_es256_pair(directory: Path, kid: str) -> str:
    """An ES256 key pair (keygen makes ES384 and RS384 only): what Epic and others sign with."""
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = ec.generate_private_key(ec.SECP256R1())
    directory.mkdir(parents=True, exist_ok=True)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / "private-key.pem").write_bytes(pem)
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    public = json.loads(algorithm.to_jwk(private_key.public_key()))
    public.update({"kid": kid, "alg": "ES256", "use": "sig"})
    (directory / "jwks.json").write_text(json.dumps({"keys": [public]}))
    return kid


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


def _median_ms(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _evaluate_ms(engine: Engine, service, raw: bytes, runs: int) -> float:
    """Median time of evaluate() alone (the body parsed beforehand, outside the clock: the
    tolerant pass rewrites it in place)."""
    times = []
    engine.evaluate(service, json.loads(raw))  # warm up
    for _ in range(runs):
        body = json.loads(raw)
        started = time.perf_counter()
        engine.evaluate(service, body)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def in_process(quick: bool) -> dict:
    engine = Engine(Settings(fixed_now=fhirdates.parse(NOW)))
    service = next(s for s in SERVICES if s.id == SERVICE_ID)
    scale = 0.3 if quick else 1.0
    typical = TYPICAL.read_bytes()
    large = gzip.decompress(LARGE.read_bytes())
    result = {}
    e = _evaluate_ms(engine, service, typical, int(400 * scale))
    j = _median_ms(int(400 * scale), lambda: json.dumps(json.loads(typical)))
    result["typical"] = {
        "bytes": len(typical),
        "evaluate_ms": round(e, 3),
        "json_loads_dumps_ms": round(j, 3),
        "ratio": round(e / j, 2),
    }
    e = _evaluate_ms(engine, service, large, max(3, int(15 * scale)))
    j = _median_ms(max(3, int(15 * scale)), lambda: json.loads(large))
    result["large"] = {
        "bytes": len(large),
        "evaluate_ms": round(e, 3),
        "json_loads_ms": round(j, 3),
        "ratio": round(e / j, 2),
    }
    rows = []
    for size, runs in ((100, 60), (1_000, 20), (10_000, 7)):
        raw = json.dumps(record_with(size)).encode()
        e = _evaluate_ms(engine, service, raw, max(3, int(runs * scale)))
        p = _median_ms(max(3, int(runs * scale)), lambda raw=raw: json.loads(raw))
        rows.append(
            {
                "observations": size,
                "bytes": len(raw),
                "evaluate_ms": round(e, 3),
                "json_loads_ms": round(p, 3),
                "ratio": round(e / p, 2),
                "us_per_observation": round(e * 1000 / size, 2),
            }
        )
    result["scaling"] = rows
    result["text_fallback"] = text_fallback(engine, service, typical, large)
    engine.close()
    return result


def text_fallback(engine: Engine, service, typical: bytes, large: bytes) -> dict:
    """Calls of the note reader on record names (and of the lab-by-name matcher) in one
    request, from cold caches: once per distinct text, and none for coded records (10,000
    coded Observations add no call to the typical request's)."""
    texts: list[str] = []
    reader = notes.read_name

    def counting(text, *args, **kwargs):
        texts.append(text)
        return reader(text, *args, **kwargs)

    notes.read_name = counting
    rows = {}
    try:
        for name, raw in (
            ("typical", typical),
            ("typical + 10,000 coded Observations", json.dumps(record_with(10_000)).encode()),
            ("large", large),
        ):
            texts.clear()
            chart_module._read_name.cache_clear()
            chart_module._lab_named.cache_clear()
            # Classifications remember whether a name reads as saddle anaesthesia: cold too.
            chart_module._CLASSIFIED.clear()
            chart_module._CODED_OR_NAMED.clear()
            engine.evaluate(service, json.loads(raw))
            labs = chart_module._lab_named.cache_info()
            rows[name] = {
                "read_name_calls": len(texts),
                "distinct_texts": len(set(texts)),
                "lab_by_name_computed": labs.misses,
                "lab_by_name_asked": labs.misses + labs.hits,
            }
    finally:
        notes.read_name = reader
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


# --- main ---------------------------------------------------------------------------------


def _ceiling_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "ceiling.py"),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--worker-class",
        WORKER_CLASS,
        "--threads",
        str(THREADS),
    ]


def _serve_command(port: int, workers: int, no_auth: bool) -> list[str]:
    command = [str(BIN / "cds-service"), "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--worker-class", WORKER_CLASS, "--threads", str(THREADS)]
    return command + (["--no-auth"] if no_auth else [])


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short wrk runs, fewer requests")
    parser.add_argument("--seconds", type=int, help="wrk duration per run (default 10, quick 3)")
    parser.add_argument("--rss-requests", type=int, help="default 20,000 (quick 3,000)")
    parser.add_argument(
        "--stores",
        choices=["all", "embedded", "server"],
        default="all",
        help="the stores of the typical runs: embedded SQLite, PostgreSQL + Redis, or both",
    )
    parser.add_argument("--no-scale", action="store_true", help="leave bench/scale.py out")
    parser.add_argument("--scale", action="store_true", help=argparse.SUPPRESS)  # the default
    args = parser.parse_args()
    seconds = args.seconds or (3 if args.quick else 10)
    rss_requests = args.rss_requests or (3_000 if args.quick else 20_000)
    work = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    workers = os.cpu_count() or 1
    settings = gunicorn_options(
        bind="127.0.0.1:PORT", workers=workers, threads=THREADS, worker_class=WORKER_CLASS
    )
    results: dict = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "connections": CONNECTIONS,
        "gunicorn": {
            k: settings[k] for k in ("worker_class", "workers", "threads", "worker_connections")
        }
        | {
            "keepalive": settings["keepalive"],
            "hooks": sorted(k for k in settings if "_" in k and callable(settings[k])),
        },
        "load_average_start": load_average(),
    }
    print(f"service and ceiling under the same gunicorn settings: {results['gunicorn']}")
    keys = {}
    for alg in ALGORITHMS:
        folder = work / f"keys-{alg}"
        kid = f"bench-{alg.lower()}"
        if alg == "ES256":
            make_es256_pair(folder, kid)
        else:
            make_key_pair(folder, alg, kid)
        keys[alg] = (folder, kid)
    fhir = start_fhir_server(work)
    proxy, proxy_url = delaying_proxy(fhir.base_url)
    trust = {
        "issuers": [
            {
                "iss": f"{ISSUER}/{alg.lower()}",
                "jwks": json.loads((folder / "jwks.json").read_text()),
                "fhir_servers": [proxy_url],
            }
            for alg, (folder, _) in keys.items()
        ],
        "allow_http_loopback": True,
    }
    (work / "trust.json").write_text(json.dumps(trust))
    port, open_port, ceiling_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "CDS_TRUST_CONFIG": str(work / "trust.json"),
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_FIXED_NOW": NOW,
        "CDS_DATA_DIR": str(work / "data"),
        "CDS_LOG_LEVEL": "WARNING",
    }
    open_env = {**env, "CDS_DATA_DIR": str(work / "data-open")}
    open_env["CDS_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{open_port}"
    service = start(_serve_command(port, workers, False), env, work, f"{base}/health", "service")
    open_service = start(
        _serve_command(open_port, workers, True),
        open_env,
        work,
        f"http://127.0.0.1:{open_port}/health",
        "service-no-auth",
    )
    # The same two on PostgreSQL + Redis (issue 15: "with the PostgreSQL and Redis stores
    # configured, the same targets hold"); their tokens name their own URL as audience.
    stack = contextlib.ExitStack()
    server_urls: dict[bool, str] = {}
    server_services = []
    if args.stores in ("all", "server"):
        from scale import server_stores

        stores_env = stack.enter_context(server_stores(work / "server-migrate"))
        for no_auth in (False, True):
            server_port = free_port()
            server_base = f"http://127.0.0.1:{server_port}"
            server_env = {**env, **stores_env, "CDS_PUBLIC_BASE_URL": server_base}
            server_env["CDS_DATA_DIR"] = str(work / f"data-server-{no_auth}")
            server_services.append(
                start(
                    _serve_command(server_port, workers, no_auth),
                    server_env,
                    work,
                    f"{server_base}/health",
                    f"service-server-{'no-auth' if no_auth else 'auth'}",
                )
            )
            server_urls[no_auth] = f"{server_base}/cds-services/{SERVICE_ID}"
    ceiling = start(
        _ceiling_command(ceiling_port, workers),
        {},
        work,
        f"http://127.0.0.1:{ceiling_port}/health",
        "ceiling",
    )
    url = f"{base}/cds-services/{SERVICE_ID}"
    open_url = f"http://127.0.0.1:{open_port}/cds-services/{SERVICE_ID}"
    ceiling_url = f"http://127.0.0.1:{ceiling_port}/cds-services/{SERVICE_ID}"
    try:
        bodies = {"typical": TYPICAL.read_bytes(), "large": gzip.decompress(LARGE.read_bytes())}
        for name, raw in bodies.items():
            (work / f"{name}.json").write_bytes(raw)
        for target in (open_url, ceiling_url):  # warm up both
            run_wrk(target, work / "typical.json", None, 2)
        results["load"] = {}
        # (label, body, algorithm, URL with auth, URL without)
        typical_runs = [("typical, --no-auth", None)]
        typical_runs += [(f"typical, {alg} token per call", alg) for alg in ALGORITHMS]
        runs = []
        if args.stores in ("all", "embedded"):
            runs += [(label, "typical", alg, url, open_url) for label, alg in typical_runs]
        if server_urls:  # the targets (RS384 and ES256 are reported on the embedded stores)
            runs += [
                (f"{label}{SERVER_STORES}", "typical", alg, server_urls[False], server_urls[True])
                for label, alg in typical_runs
                if alg in (None, "ES384")
            ]
        if args.stores in ("all", "embedded"):
            runs += [("large, ES384 token per call", "large", "ES384", url, open_url)]
        for label, body, alg, auth_url, no_auth_url in runs:
            body_path = work / f"{body}.json"
            tokens = None
            if alg is not None:
                folder, kid = keys[alg]
                count = seconds * (3000 if body == "typical" else 50)
                print(f"signing {count:,} {alg} tokens ...", flush=True)
                signed = sign_tokens(folder, kid, auth_url, count, alg)
                tokens = work / f"{body}-{alg}.tokens"
                tokens.write_text("\n".join(signed) + "\n")
            print(f"wrk: {label} (load {load_average()}) ...", flush=True)
            svc = run_wrk(auth_url if alg else no_auth_url, body_path, tokens, seconds)
            top = run_wrk(ceiling_url, body_path, None, seconds)
            results["load"][label] = {
                "body_bytes": len(bodies[body]),
                "service": svc,
                "ceiling": top,
                "ratio": round(svc["rps"] / top["rps"], 3),
                "load_average": load_average(),
            }
        print("in process ...", flush=True)
        results["in_process"] = in_process(args.quick)

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
        folder, kid = keys["ES384"]
        tokens = iter(sign_tokens(folder, kid, url, 12))
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

        print(f"memory over {rss_requests:,} requests ...", flush=True)
        tokens = sign_tokens(folder, kid, url, rss_requests + 500)
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
            "requests": rss_requests,
            "failed": sum(s != 200 for s in statuses),
            "rss_before_kb": before,
            "rss_after_kb": after,
            "growth_pct": round((after - before) / before * 100, 2),
        }
    finally:
        for process in (service, open_service, ceiling, fhir.process, *server_services):
            stop(process)
        proxy.shutdown()
        stack.close()  # the bench database dropped, the Redis keys deleted
    results["load_average_end"] = load_average()
    if not args.no_scale:
        results["scale"] = run_scale(seconds)
    results["targets"] = targets(results)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (ROOT / "bench" / "results.md").write_text(table + "\n")
    print(table)
    return 0


def run_scale(seconds: int) -> dict:
    """bench/scale.py (two instances behind nginx, PostgreSQL against SQLite), when present:
    its table as it printed it, and its two comparisons (`scale_lines`)."""
    script = ROOT / "bench" / "scale.py"
    if not script.exists():
        print("scale: bench/scale.py is not there; skipped", flush=True)
        return {"skipped": "bench/scale.py is not there"}
    print("scale (bench/scale.py) ...", flush=True)
    output = Path(tempfile.mkdtemp(prefix="cds-bench-scale-")) / "scale.json"
    done = subprocess.run(
        [sys.executable, str(script), "--seconds", str(seconds), "--output", str(output)],
        capture_output=True,
        text=True,
    )
    print(done.stdout, end="", flush=True)
    result = {"returncode": done.returncode, "output": done.stdout[-4000:]}
    if output.exists():
        result["lines"] = scale_lines(json.loads(output.read_text())["rows"])
    return result


def scale_lines(rows: list[dict]) -> list[str]:
    """Two instances behind nginx against one, and PostgreSQL + Redis against SQLite."""

    def row(setup: str, stores: str) -> dict | None:
        found = next((r for r in rows if r["setup"] == setup and r["stores"] == stores), None)
        return found if found and found.get("rps") else None

    def line(what: str, a: dict | None, b: dict | None) -> str:
        if a is None or b is None:
            return f"{what}: not measured (see the table)"
        return (
            f"{what}: {a['rps']:.0f} against {b['rps']:.0f} req/s ({a['rps'] / b['rps']:.2f}x), "
            f"p99 {a['p99_ms']:.1f} against {b['p99_ms']:.1f} ms"
        )

    return [
        line(
            "Two instances behind nginx (2 workers each) against one behind nginx, SQLite",
            row("2 instances behind nginx, 2 workers each", "sqlite"),
            row("1 instance behind nginx", "sqlite"),
        ),
        line(
            "PostgreSQL + Redis against SQLite, one instance direct",
            row("1 instance, direct", "postgresql+redis"),
            row("1 instance, direct", "sqlite"),
        ),
    ]


def _typical_targets(load: dict, stores: str) -> list[tuple]:
    """The typical request's targets on one kind of stores ("" embedded, else SERVER_STORES)."""
    typical = load.get(f"typical, --no-auth{stores}")
    if typical is None:
        return []
    rows = [
        (
            f"typical --no-auth{stores}: req/s / ceiling",
            ">= 0.50",
            typical["ratio"],
            typical["ratio"] >= 0.5,
        ),
        (
            f"typical --no-auth{stores}: p99 at 8 connections",
            "<= 20 ms",
            f"{typical['service']['p99_ms']:.1f} ms",
            typical["service"]["p99_ms"] <= 20,
        ),
    ]
    for alg in ALGORITHMS:
        run = load.get(f"typical, {alg} token per call{stores}")
        if run is None:  # not run on these stores
            continue
        errors = run["service"]["errors"] + run["service"]["non2xx"]
        ok = run["ratio"] >= 0.35 and not errors
        if alg == "ES384":
            rows.append(
                (
                    f"typical, fresh {alg} token per call{stores}: req/s / ceiling",
                    ">= 0.35",
                    run["ratio"],
                    ok,
                )
            )
        else:
            rows.append(
                (
                    f"typical, fresh {alg} token per call{stores}: req/s / ceiling (reported)",
                    "report",
                    run["ratio"],
                    None,
                )
            )
    return rows


def targets(r: dict) -> list[dict]:
    """Issue 15's targets: each with its measured value and whether it is met."""
    load, inproc = r["load"], r["in_process"]
    rows = _typical_targets(load, "") + _typical_targets(load, SERVER_STORES)
    t = inproc["typical"]
    rows.append(
        (
            "in process, typical: evaluate / (json.loads + json.dumps)",
            "<= 4x",
            f"{t['ratio']:.2f}x",
            t["ratio"] <= 4,
        )
    )
    lg = inproc["large"]
    rows.append(
        (
            "in process, large record: evaluate / json.loads",
            "<= 2x",
            f"{lg['ratio']:.2f}x",
            lg["ratio"] <= 2,
        )
    )
    per = {row["observations"]: row["us_per_observation"] for row in inproc["scaling"]}
    growth = per[10_000] / per[1_000]
    rows.append(
        (
            "10,000 Observations linear: time per Observation 10,000 / 1,000",
            f"<= {LINEAR_FACTOR}x",
            f"{growth:.2f}x",
            growth <= LINEAR_FACTOR,
        )
    )
    fallback = inproc["text_fallback"]
    once = all(f["read_name_calls"] == f["distinct_texts"] for f in fallback.values())
    coded = (
        fallback["typical + 10,000 coded Observations"]["read_name_calls"]
        == fallback["typical"]["read_name_calls"]
    )
    rows.append(
        (
            "text fallback: once per distinct text, none for coded records",
            "calls = distinct texts; +0 for 10,000 coded",
            ", ".join(
                f"{k}: {v['read_name_calls']}/{v['distinct_texts']}" for k, v in fallback.items()
            ),
            once and coded,
        )
    )
    return [
        {
            "target": name,
            "goal": goal,
            "measured": measured,
            "met": None if met is None else bool(met),
        }
        for name, goal, measured, met in rows
    ]


def render(r: dict) -> str:
    g = r["gunicorn"]
    lines = [
        f"Benchmark of {r['date']} on {r['machine']}; wrk, {r['connections']} connections; "
        f"service and ceiling both under gunicorn {g['worker_class']}, {g['workers']} workers "
        f"({g['worker_connections']} connections each, keep-alive {g['keepalive']} s); "
        f"load average {r['load_average_start']} at start, {r['load_average_end']} at end.",
        "",
        "| target (issue 15) | goal | measured | |",
        "|---|---|---|---|",
    ]
    for t in r["targets"]:
        verdict = "reported" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {verdict} |")
    lines += [
        "",
        "| load (full prefetch) | service req/s | p50 ms | p99 ms | ceiling req/s | "
        "ceiling p99 ms | ratio | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, load in r["load"].items():
        s, c = load["service"], load["ceiling"]
        errors = f", {s['errors']} errors" if s["errors"] else ""
        lines.append(
            f"| {name} ({load['body_bytes']:,} B{errors}) | {s['rps']:.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {c['rps']:.0f} | {c['p99_ms']:.2f} | {load['ratio']:.0%} | "
            f"{load['load_average']} |"
        )
    inproc = r["in_process"]
    t, lg = inproc["typical"], inproc["large"]
    lines += [
        "",
        f"In process: typical ({t['bytes']:,} B) evaluate {t['evaluate_ms']:.3f} ms, json.loads "
        f"+ json.dumps {t['json_loads_dumps_ms']:.3f} ms ({t['ratio']:.2f}x); large record "
        f"({lg['bytes']:,} B) evaluate {lg['evaluate_ms']:.1f} ms, json.loads "
        f"{lg['json_loads_ms']:.1f} ms ({lg['ratio']:.2f}x).",
        "",
        "| Observations | body | evaluate ms | json.loads ms | ratio | us per Observation |",
        "|---|---|---|---|---|---|",
    ]
    for row in inproc["scaling"]:
        lines.append(
            f"| {row['observations']:,} | {row['bytes']:,} B | {row['evaluate_ms']:.2f} | "
            f"{row['json_loads_ms']:.2f} | {row['ratio']:.2f}x | {row['us_per_observation']:.1f} |"
        )
    lines += [
        "",
        "| text fallback (cold caches) | note reader calls | distinct texts | "
        "lab-by-name computed / asked |",
        "|---|---|---|---|",
    ]
    for name, row in inproc["text_fallback"].items():
        lines.append(
            f"| {name} | {row['read_name_calls']} | {row['distinct_texts']} | "
            f"{row['lab_by_name_computed']} / {row['lab_by_name_asked']} |"
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
    if "scale" in r:
        lines += ["", *r["scale"].get("lines", [])]
        lines += [
            "",
            "Scale (bench/scale.py):",
            "",
            "```",
            r["scale"].get("output", r["scale"].get("skipped", "")).strip(),
            "```",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
