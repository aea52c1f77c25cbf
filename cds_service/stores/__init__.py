"""Where the service keeps state: one small interface per concern, each on two engines.

| concern   | embedded (unset URLs: one machine) | server (several instances)        |
|-----------|------------------------------------|-----------------------------------|
| feedback  | `feedback.sqlite3` in CDS_DATA_DIR | PostgreSQL (CDS_DATABASE_URL)     |
| audit     | `audit.sqlite3`                    | PostgreSQL, same database         |
| analytics | reads both files (read-only)       | reads the shared tables           |
| replay    | `replay.sqlite3`                   | Redis (CDS_REDIS_URL)             |

Nothing outside this package knows a table. A database or Redis that does not answer is
StoreUnavailable (a 503) for feedback and authentication; the audit trail spools to local disk
instead and drains when the database is back (audit.py, spool.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa

from ..analytics import Period, RuleActivity
from ..errors import StoreUnavailable
from ..settings import Settings
from . import health, migrate
from .analytics import EmbeddedAnalytics, SharedAnalytics
from .audit import AuditStore
from .feedback import FeedbackStore
from .quiet import SqlQuietStore
from .replay import RedisReplayStore, SqliteReplayStore
from .sql import is_unavailable, postgres_engine, safe_url, sqlite_engine

__all__ = [
    "AnalyticsStore",
    "EmbeddedAnalytics",
    "AuditStore",
    "FeedbackStore",
    "ReplayStore",
    "StoreUnavailable",
    "Stores",
    "open_stores",
    "prepare",
]

log = logging.getLogger("cds_service.stores")


class ReplayStore(Protocol):
    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        """Record the token id until `exp` (the verifier's last accepting moment: the token's
        `exp` plus the leeway); False when it was seen before (a replay)."""


class AnalyticsStore(Protocol):
    def rule_activity(self, period: Period, rule_ids: Iterable[str] = ()) -> list[RuleActivity]:
        """Per rule: cards shown (by indicator), accepted, overridden, override reasons."""


@dataclass
class Stores:
    feedback: FeedbackStore
    audit: AuditStore
    analytics: AnalyticsStore
    replay: ReplayStore | None
    database: str  # "sqlite" or "postgresql"
    quiet: SqlQuietStore  # issue 16: beside the audit trail (it joins card rows)
    _engines: list[sa.Engine] = field(default_factory=list, repr=False)
    _monitor: health.Monitor = field(init=False, repr=False)
    _schema: str = field(default="unchecked", repr=False)  # server database: "ok", "behind"

    def __post_init__(self) -> None:
        probes = {"database": health.Probe("database", self._database_state)}
        fixed = {}
        if isinstance(self.replay, RedisReplayStore):
            probes["redis"] = health.Probe("redis", self._redis_state)
        else:
            fixed["redis"] = "not configured"
        self._monitor = health.Monitor(probes, fixed, self.audit.spool_depth)

    def health(self) -> dict:
        """Whether the database and Redis answer (`ok`, `unavailable`, `behind`: the schema,
        `starting`: not asked yet), and the spool depth: in a serving process the state the
        monitor last found, at once (stores/health.py); elsewhere (the CLI, tests) asked now."""
        if self._monitor.running:
            return self._monitor.state
        return self._monitor.refresh()

    def start_monitor(self) -> None:
        self._monitor.start()

    def _database_state(self) -> str:
        engine = self._engines[0]
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
                if self.database == "postgresql" and self._schema != "ok":
                    return self._check_schema(migrate.heads_on(connection), engine)
            return "ok"
        except sa.exc.SQLAlchemyError as error:
            self._schema = "unchecked"  # checked again on its next answer
            if not is_unavailable(error):
                cause = type(getattr(error, "orig", None) or error).__name__
                log.warning(json.dumps({"event": "health_database_error", "error": cause}))
            return "unavailable"

    def _check_schema(self, have: set[str], engine: sa.Engine) -> str:
        url = engine.url.render_as_string(hide_password=True)
        problem = migrate.behind_message(have, url)
        was, self._schema = self._schema, "behind" if problem else "ok"
        if problem and was != "behind":  # once per turn: hook calls still answer meanwhile
            log.error(json.dumps({"event": "database_schema_behind", "error": problem}))
        elif not problem and was == "behind":
            log.warning(json.dumps({"event": "database_schema_current"}))
        return "behind" if problem else "ok"

    def _redis_state(self) -> str:
        return "ok" if self.replay.ping() else "unavailable"

    def close(self) -> None:
        self._monitor.stop()
        self.audit.close()
        if isinstance(self.replay, RedisReplayStore):
            self.replay.close()
        for engine in self._engines:
            engine.dispose()


def open_stores(settings: Settings, *, replay: bool = True, writer: bool = True) -> Stores:
    """The stores the settings name. `replay`: whether to open the embedded token replay
    store (needed with authentication on; Redis, when configured, is always opened, lazily);
    `writer`: whether this is a serving process, where the audit store runs its writer thread
    and the health monitor asks the servers in the background (the CLI flushes and asks by
    itself)."""
    spool_dir = settings.data_dir / "spool" / "audit"
    if settings.database_url:
        engine = postgres_engine(settings.database_url)
        engines = [engine]
        feedback = FeedbackStore(engine)
        audit = AuditStore(engine, spool_dir, start_writer=writer)
        analytics: AnalyticsStore = SharedAnalytics(engine)
        database = "postgresql"
        quiet = SqlQuietStore(engine)
    else:
        migrate.upgrade_embedded(settings)
        feedback_engine = sqlite_engine(settings.feedback_db_path)
        audit_engine = sqlite_engine(settings.audit_db_path)
        engines = [audit_engine, feedback_engine]
        feedback = FeedbackStore(feedback_engine)
        audit = AuditStore(audit_engine, spool_dir, start_writer=writer)
        analytics = EmbeddedAnalytics(settings.audit_db_path, settings.feedback_db_path)
        database = "sqlite"
        quiet = SqlQuietStore(audit_engine)
    replay_store: ReplayStore | None = None
    if settings.redis_url:  # lazy: no connection until asked (health says whether it answers)
        replay_store = RedisReplayStore(settings.redis_url, settings.redis_key_prefix)
    elif replay:
        replay_engine = sqlite_engine(settings.replay_db_path)
        engines.append(replay_engine)
        # Every worker opens the file at boot: the table is made under the migrations' file
        # lock (two workers' CREATE TABLE at once could fail with "database is locked").
        with migrate.locked(settings.data_dir / "migrate.lock"):
            replay_store = SqliteReplayStore(replay_engine)
    stores = Stores(feedback, audit, analytics, replay_store, database, quiet, engines)
    if writer:
        stores.start_monitor()
    return stores


def prepare(settings: Settings) -> None:
    """Before the workers start (`serve`): the embedded files created or upgraded in place; a
    server database checked to be at this version's schema (ConfigurationError naming
    `cds-service db upgrade` when behind). A database that does not answer yet is no reason
    not to start: hook calls are answered and audited to the spool meanwhile."""
    if not settings.database_url:
        migrate.upgrade_embedded(settings)
        return
    engine = postgres_engine(settings.database_url)
    try:
        migrate.check_database(engine, settings.database_url)
    except sa.exc.SQLAlchemyError as error:
        if not is_unavailable(error):
            raise
        log.warning(
            json.dumps(
                {
                    "event": "database_unavailable_at_start",
                    "database": safe_url(settings.database_url),
                    "error": type(getattr(error, "orig", None) or error).__name__,
                }
            )
        )
    finally:
        engine.dispose()
