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
    measured at 8 connections, p50 2 ms but p99 450-750 ms; with the turn, p99 tens of ms."""
    import gevent

    gevent.sleep(0)


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
    from .app import check_configuration

    check_configuration(settings)  # fail here, in one clear line, not in every worker
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    options = gunicorn_options(
        bind=f"{host}:{port}", workers=workers, threads=threads, worker_class=worker_class
    )
    _Gunicorn(settings, options).run()
