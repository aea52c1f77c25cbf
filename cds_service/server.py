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
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log.warning(
            "WARNING: --no-auth: client JWTs are NOT verified. Development use only; "
            "never expose this service to a network."
        )
    from .app import check_configuration

    check_configuration(settings)  # fail here, in one clear line, not in every worker
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from .stores import prepare

    prepare(settings)  # embedded files upgraded; a server database's schema checked
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,  # gthread only
        "worker_class": worker_class,
        "worker_connections": WORKER_CONNECTIONS,  # gevent only
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,  # the app logs its own structured access lines
        "preload_app": False,
    }
    _Gunicorn(settings, options).run()
