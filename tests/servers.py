"""Real servers for the tests: the service under gunicorn, a FHIR server, a fault server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # still starting
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready after {seconds} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class ServiceProcess:
    """`cds-service serve` under gunicorn, as an operator would run it."""

    base_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log_path.read_text()


def start_service(
    workdir: Path,
    env: dict[str, str] | None = None,
    workers: int = 2,
    auth: bool = False,
    port: int | None = None,
):
    """`auth=True` serves with client JWTs verified (the env then names CDS_TRUST_CONFIG and
    CDS_PUBLIC_BASE_URL, which needs the `port` chosen beforehand)."""
    port = port or free_port()
    data_dir = workdir / "data"
    log_path = workdir / "service.log"
    environment = {**os.environ, "CDS_DATA_DIR": str(data_dir), **(env or {})}
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            str(BIN / "cds-service"),
            "serve",
            *([] if auth else ["--no-auth"]),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=workdir,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base_url}/health", process, log_path)
    return ServiceProcess(base_url, data_dir, log_path, process)


@dataclass
class FhirServer:
    """sekmet-fhir on 127.0.0.1: a real FHIR R4 server (FastAPI + SQLite).

    It logs every request it answers in its `traffic` table, a moment after answering;
    `mark()` waits for a marker request to be logged, so `requests_since(mark)` is complete.
    """

    base_url: str
    db_path: Path
    process: subprocess.Popen

    def put(self, resource: dict) -> None:
        response = requests.put(
            f"{self.base_url}/{resource['resourceType']}/{resource['id']}",
            json=resource,
            headers={"Content-Type": "application/fhir+json"},
            timeout=10,
        )
        assert response.status_code in (200, 201), response.text

    def mark(self) -> int:
        tag = uuid.uuid4().hex
        requests.get(f"{self.base_url}/metadata?_barrier={tag}", timeout=10)
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            for _ in range(1000):
                row = db.execute(
                    "SELECT id FROM traffic WHERE url LIKE ?", (f"%_barrier={tag}",)
                ).fetchone()
                if row:
                    return row[0]
                time.sleep(0.01)
        raise RuntimeError("the FHIR server did not log the marker request")

    def requests_since(self, mark: int) -> list[tuple[str, str, str]]:
        """(method, url, request headers) of each request after `mark`, up to a new mark."""
        end = self.mark()
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT method, url, req_headers FROM traffic WHERE id > ? AND id < ? "
                "AND url NOT LIKE '%_barrier=%' ORDER BY id",
                (mark, end),
            ).fetchall()
        return [(m, u, h or "") for m, u, h in rows]


def start_fhir_server(workdir: Path) -> FhirServer:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    db_path = workdir / "sekmet.db"
    config = workdir / "settings.yaml"
    config.write_text(
        f"host: 127.0.0.1\nport: {port}\nbase_url: {base_url}\ndb_path: {db_path}\n"
        f"data_dir: {workdir / 'data'}\nsimulator: {{enabled: false}}\n"
        "server_auth: {types: [none]}\n"
    )
    log_path = workdir / "sekmet.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [str(BIN / "sekmet"), "serve", "--config", str(config)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until_up(f"{base_url}/metadata", process, log_path)
    return FhirServer(base_url, db_path, process)


Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class FaultServer:
    """A plain HTTP server on 127.0.0.1 that misbehaves as a test tells it to.

    For faults a real FHIR server cannot be made to produce: slowness, 500, HTML, link loops.
    Each test registers a handler under its own path prefix; every request is recorded.
    """

    base_url: str
    server: ThreadingHTTPServer
    handlers: dict[str, Handler] = field(default_factory=dict)
    seen: list[tuple[str, dict]] = field(default_factory=list)

    def route(self, prefix: str, handler: Handler) -> str:
        self.handlers[prefix] = handler
        return f"{self.base_url}{prefix}"

    def requests_to(self, prefix: str) -> list[tuple[str, dict]]:
        return [(path, headers) for path, headers in self.seen if path.startswith(prefix)]


def start_fault_server() -> FaultServer:
    holder: dict[str, FaultServer] = {}

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            fault = holder["server"]
            fault.seen.append((self.path, dict(self.headers)))
            for prefix, handler in fault.handlers.items():
                if self.path.startswith(prefix):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        handler(self)
                    return
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    fault = FaultServer(f"http://127.0.0.1:{server.server_port}", server)
    holder["server"] = fault
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fault


def send_json(handler: BaseHTTPRequestHandler, body: object, status: int = 200) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@dataclass
class JwksServer:
    """JWK Sets served over plain HTTP on 127.0.0.1 (trusted with `allow_http_loopback`).

    A set can be replaced while the service runs (key rotation); every fetch is recorded with
    its time and path (query string included).
    """

    fault: FaultServer
    documents: dict[str, dict] = field(default_factory=dict)
    fetched: list[tuple[float, str]] = field(default_factory=list)

    def publish(self, path: str, jwks: dict) -> str:
        """Serve `jwks` at `path` (and at anything `path` prefixes); its URL."""
        self.documents[path] = jwks

        def serve(handler: BaseHTTPRequestHandler) -> None:
            self.fetched.append((time.monotonic(), handler.path))
            payload = json.dumps(self.documents[path]).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)

        return self.fault.route(path, serve)

    def fetches(self, path: str) -> list[float]:
        """When each request whose path starts with `path` arrived."""
        return [at for at, seen in self.fetched if seen.startswith(path)]


def start_jwks_server() -> JwksServer:
    return JwksServer(start_fault_server())


def worker_pids(process: subprocess.Popen) -> set[int]:
    """The gunicorn workers of a `cds-service serve` process (its children; Linux /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == process.pid:
            pids.add(int(stat.parent.name))
    return pids


def pid_serving(client_port: int, server_port: int, pids: set[int]) -> int | None:
    """Which of `pids` holds the server side of the open TCP connection from 127.0.0.1:
    `client_port` to `server_port` (Linux /proc; the connection must still be open)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = line.split()
        if columns[1] == local and columns[2] == remote:
            inode = columns[9]
            break
    if inode is None:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None
