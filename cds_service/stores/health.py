"""Whether the database and Redis answer, known before anyone asks (issue 14, review).

`/health` is what Kubernetes' liveness probe and nginx ask, with a timeout of a second or two:
it must never wait on a server. One monitor per worker process asks the servers in the
background, once a second (a thread; under gevent a greenlet, psycopg and redis-py waiting
cooperatively), and `/health` answers from what it last found, at once.

Each server is asked by a `Probe`: one question at a time, answered within DEADLINE_S or taken
as "unavailable". The deadline matters for a server that accepts connections and then says
nothing (a black hole, a hung process): the connect timeout does not cover a pooled
connection's ping, and the question would otherwise wait as long as the kernel keeps the
connection. A question still waiting is not asked again: it ends when the connection does.

A server database's schema is checked again on the first answer after it did not answer (at
start it may have been down, and come back at an older revision): while behind, `database`
is "behind", the log says to run `cds-service db upgrade`, and readiness is 503.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("cds_service.stores")

INTERVAL_S = 1.0  # how often each worker asks
DEADLINE_S = 3.0  # a question not answered by then: "unavailable"
FIRST_WAIT_S = 0.5  # at start, how long the worker waits for the first answers (then "starting")

STARTING = "starting"
UNAVAILABLE = "unavailable"


class Probe:
    """One question to one server at a time, in its own thread (a greenlet under gevent)."""

    def __init__(self, name: str, ask: Callable[[], str]):
        self.name = name
        self._ask = ask
        self._done = threading.Event()
        self._done.set()
        self._answer = UNAVAILABLE

    def answer(self, deadline: float) -> str:
        """The server's state: a new question's answer (or the one still waiting's, should it
        come now), or "unavailable" when none comes within `deadline` seconds."""
        if self._done.is_set():
            self._done.clear()
            threading.Thread(target=self._run, name=f"health-{self.name}", daemon=True).start()
        if self._done.wait(deadline):
            return self._answer
        return UNAVAILABLE

    def _run(self) -> None:
        try:
            self._answer = self._ask()
        except Exception as exc:  # a defect or a driver's surprise: not available, logged
            event = {"event": "health_check_failed", "server": self.name}
            log.warning(json.dumps({**event, "error": type(exc).__name__}))
            self._answer = UNAVAILABLE
        finally:
            self._done.set()


class Monitor:
    """The last known state ({"database", "redis", "spool"}), refreshed every INTERVAL_S."""

    def __init__(self, probes: dict[str, Probe], fixed: dict[str, str], depth: Callable[[], int]):
        self._probes = probes
        self._depth = depth
        self.state: dict = {**fixed, **{name: STARTING for name in probes}, "spool": 0}
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, deadline: float = DEADLINE_S) -> dict:
        """Ask every server now (each question bounded by `deadline`); the new state."""
        answers = {name: probe.answer(deadline) for name, probe in self._probes.items()}
        try:
            spool = self._depth()
        except OSError:
            spool = self.state["spool"]
        self.state = {**self.state, **answers, "spool": spool}  # one assignment: readers see
        return self.state  # either the old state or the new one, never half of it

    def start(self) -> None:
        """Ask in the background from now on; wait up to FIRST_WAIT_S for the first answers
        (start-up, not a request: the worker is not serving yet)."""
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._thread.start()
        self._first.wait(FIRST_WAIT_S)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # never end the monitor: the state would freeze
                log.error(json.dumps({"event": "health_failed", "error": type(exc).__name__}))
            self._first.set()
            if self._stop.wait(INTERVAL_S):
                return

    def stop(self) -> None:
        self._stop.set()


def readiness(state: dict) -> str | None:
    """Why this instance is not ready (None: ready)."""
    database = state.get("database")
    if database == "behind":
        return "the database schema is behind this version: run `cds-service db upgrade`"
    if database == STARTING or state.get("redis") == STARTING:
        return "the first check of the database and Redis is under way"
    if database == UNAVAILABLE:
        return "the database does not answer"
    if state.get("redis") == UNAVAILABLE:
        return "Redis does not answer"
    return None
