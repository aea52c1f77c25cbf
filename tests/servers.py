"""Real servers for the tests: the service under gunicorn, a FHIR server, a fault server."""

from __future__ import annotations

import contextlib
import hashlib
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


def debian_package(binary: Path, package: str) -> Path:
    """`binary`, installed with apt-get from Debian's `package` if it is not there yet (tests that
    need nginx or Chromium fail, never skip, when it cannot be installed)."""
    import shutil

    import pytest

    if binary.exists():
        return binary
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{binary} is missing and apt-get is not available to install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # the package lists may be missing or stale: update, then retry
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not binary.exists():
        output = f"{result.stdout[-2000:]}{result.stderr}"
        pytest.fail(f"could not install Debian's {package}:\n{output}")
    return binary


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
    if environment.get("CDS_DATABASE_URL") and not environment.get("CDS_LOG_HASH_KEY"):
        # Instances on one database must share the patient-hash key (serve refuses without
        # one): the tests derive it from the database, so every instance of a test agrees.
        database = environment["CDS_DATABASE_URL"].rsplit("/", 1)[-1]
        environment["CDS_LOG_HASH_KEY"] = hashlib.sha256(database.encode()).hexdigest()
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


# ------------------------------------------------------------ PostgreSQL, Redis, TCP proxy

PG_ADMIN_URL = os.environ.get("CDS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def server_or_skip(kind: str, check: Callable[[], object]) -> None:
    """Whether PostgreSQL or Redis answers: without it a test skips with the reason, except
    under CI, where it fails (the servers must be running there)."""
    import pytest

    try:
        check()
    except Exception as exc:  # any driver error means "not reachable"
        message = f"{kind} is not reachable ({type(exc).__name__}): {exc}".splitlines()[0]
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def postgres_database(prefix: str = "cds_test"):
    """A new, uniquely named database (its URL), dropped after: its connections terminated
    first. Nothing else on the server is touched."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server_or_skip("PostgreSQL", lambda: psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close())
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextlib.contextmanager
def redis_prefix():
    """A unique key prefix on the test Redis (the prefix), its keys deleted after."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=3, socket_connect_timeout=3)
    server_or_skip("Redis", client.ping)
    prefix = f"cds:test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def url_through(url: str, proxy: TcpProxy) -> str:
    """The same database or Redis URL with its host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


class TcpProxy:
    """A threaded TCP forwarder on 127.0.0.1 to `target`: a fault test puts it between the
    service and PostgreSQL or Redis. `cut()` closes the listener and every live connection
    (new connections are refused); `black_hole()` keeps accepting connections and never
    answers on any (what the client sends is read and dropped, as by a server that hangs or a
    network that drops packets); `restore()` ends either (a black hole's connections are
    closed) and forwards again on the same port."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._holing = False
        self.restore()

    def black_hole(self) -> None:
        self._holing = True

    def restore(self) -> None:
        if self._listener is not None:  # from a black hole: its connections end
            self.cut()
        self._holing = False
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._holing:  # accepted, read and never answered
                with self._lock:
                    self._sockets.add(client)
                threading.Thread(target=self._pipe, args=(client, None), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if sink is not None and not self._holing:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)
            source.close()  # the other direction's thread closes `sink`


@contextlib.contextmanager
def store_settings(engine: str, data_dir: Path, **overrides):
    """Settings for the stores on `engine`: "sqlite" (the embedded files in data_dir) or
    "postgresql" (a fresh database, migrated to this version, dropped after)."""
    from cds_service.settings import Settings
    from cds_service.stores import migrate

    if engine == "sqlite":
        yield Settings(data_dir=data_dir, **overrides)
        return
    with postgres_database() as url:
        settings = Settings(data_dir=data_dir, database_url=url, **overrides)
        migrate.upgrade(settings)
        yield settings
