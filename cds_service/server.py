"""Serving under gunicorn (never Flask's development server).

The default worker class is gevent: each connection is a greenlet, so a client that trickles
its headers or body one byte at a time holds a few kilobytes of memory and a socket, not a
worker thread (with gthread, 8 such clients stopped a 2-worker service; see README
"Hardening"). `worker_connections` bounds the connections per worker. The process is
monkey-patched before anything opens a socket (cli.py), so the FHIR client's requests, its
watchdog timers and the audit writer cooperate with the other greenlets.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication

from .settings import Settings

log = logging.getLogger("cds_service")


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict):
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app(self._settings)


WORKER_CLASSES = ("gevent", "gthread")
WORKER_CONNECTIONS = 1000


def _take_turns(worker, req, environ, resp) -> None:
    """gevent: after each answer, let the worker's other connections run. A keep-alive client
    whose next request is already in the socket is otherwise served again and again without a
    switch (a read that finds data never yields), while the worker's other connections wait:
    measured at 8 connections, p50 2 ms but p99 450-750 ms.

    The turn is a timer, not `sleep(0)`: `sleep(0)` only queues the greenlet as a callback, and
    the hub runs up to 50 callbacks (or 5 ms of them) before it polls the sockets again, so a
    few connections whose next request is already there were served in a chain of dozens while
    a request readable on another connection sat unread (traced: 50-83 ms unread, 31-46 other
    requests served meanwhile; p99 47-53 ms). A timer makes the hub run a full loop pass,
    sockets polled, before the greenlet resumes: p99 10.6-11.4 ms, the same req/s and CPU."""
    import gevent

    gevent.sleep(_TURN_S)


_TURN_S = 1e-6  # any timer: the hub's next loop pass, not a wait


def _settle(worker) -> None:
    """Once the worker has loaded the app: what start-up allocated (schemas, value sets, card
    content, fhir.resources' models, both validators of every schema: loaded first, not by
    the first requests) moves out of the garbage collector's sight, so a full collection
    scans only what requests allocate (measured: 25-40 ms pauses while serving before; none
    over 2 ms after, in a 16 s wrk run), and copy-on-write pages stay shared."""
    import gc

    extensions = getattr(worker.wsgi, "extensions", None) or {}
    engine = extensions.get("cds_engine")
    if engine is not None:
        engine.warm_up()
    gc.collect()
    gc.freeze()


def gunicorn_options(
    *, bind: str, workers: int, threads: int, worker_class: str = "gevent"
) -> dict:
    """The gunicorn settings of `cds-service serve`; bench/ceiling.py runs the framework
    ceiling with the very same ones."""
    options = {
        "bind": bind,
        "workers": workers,
        "threads": threads,  # gthread only
        "worker_class": worker_class,
        "worker_connections": WORKER_CONNECTIONS,  # gevent only
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,  # the app logs its own structured access lines
        "preload_app": False,
        "post_worker_init": _settle,
        # gunicorn 27's control socket ($HOME/.gunicorn/gunicorn.ctl) would be shared by every
        # instance of a host and is unwritable in the read-only container: not used.
        "control_socket_disable": True,
    }
    if worker_class == "gevent":
        options["post_request"] = _take_turns
    return options


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker_class: str = "gevent",
) -> None:
    if not settings.auth_enabled:
        logging.basicConfig(level=settings.log_level, format="%(message)s")
        log.warning(
            "WARNING: --no-auth: client JWTs are NOT verified. Development use only; "
            "never expose this service to a network."
        )
    metrics_dir = _metrics_dir(settings.data_dir)  # before the app imports prometheus_client
    try:
        from .app import check_configuration

        check_configuration(settings)  # fail here, in one clear line, not in every worker
    except BaseException:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from .stores import prepare

    prepare(settings)  # embedded files upgraded; a server database's schema checked
    options = gunicorn_options(
        bind=f"{host}:{port}", workers=workers, threads=threads, worker_class=worker_class
    )
    # prometheus_client's multiprocess files: a dead worker's gauges leave the sums, and the
    # directory goes at exit (the ceiling app, sharing gunicorn_options, has no metrics).
    options.update(child_exit=_child_exit, on_exit=_on_exit)
    _Gunicorn(settings, options).run()


def _metrics_dir(data_dir: Path) -> Path:
    """A fresh directory for the workers' metric files (prometheus_client's multiprocess mode),
    one per `serve`, under CDS_DATA_DIR (writable wherever the service runs), removed at exit.
    Named by host and pid: those of a `serve` of this host that was killed are removed here,
    never those of another container sharing the data directory."""
    root = data_dir / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for stale in root.glob(f"{host}_*"):  # no host name has a "_"
        pid = stale.name.removeprefix(f"{host}_").split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{host}_{os.getpid()}_", dir=root))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its gauges leave the sums; counters stay


def _on_exit(server) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and Path(path).parent.name == "metrics":  # the one _metrics_dir made
        shutil.rmtree(path, ignore_errors=True)
