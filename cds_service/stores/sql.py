"""Engines and connection handling, written once for every store (SQLAlchemy Core 2).

SQLAlchemy rather than bare psycopg: Alembic needs it anyway, and one table definition and one
statement serve SQLite and PostgreSQL alike (`INSERT ... ON CONFLICT` through each dialect);
its pool replaces the per-thread connection code each SQLite store used to repeat. PostgreSQL
goes through psycopg 3, which cooperates with gevent's monkey-patching (since 3.1.14), so a
slow query holds up its own greenlet only.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from .. import metrics
from ..errors import StoreUnavailable

log = logging.getLogger("cds_service.stores")

# A dead or unreachable database answers within these bounds: the connect timeout (libpq's
# minimum is 2 s), the kernel's give-up on unacknowledged data (tcp_user_timeout, ms) and a
# statement timeout on the server side.
PG_CONNECT_TIMEOUT_S = 2
PG_TCP_USER_TIMEOUT_MS = 5000
PG_STATEMENT_TIMEOUT_MS = 30000
# Per worker process: gevent serves up to 1000 connections on them; a request waits at most
# POOL_TIMEOUT_S for one (then 503).
PG_POOL_SIZE, PG_MAX_OVERFLOW, POOL_TIMEOUT_S = 5, 5, 5


def sqlite_engine(path: Path) -> sa.Engine:
    """A file of the embedded store: WAL, a 10 s busy timeout, and transactions begun by
    SQLAlchemy (the sqlite3 module's own BEGIN handling is turned off)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 10, "check_same_thread": False},
        pool_size=5,
        max_overflow=20,
        pool_timeout=30,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=10000")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # persistent: a no-op after once
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def postgres_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg"),
        pool_size=PG_POOL_SIZE,
        max_overflow=PG_MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,  # a connection cut while idle is replaced, not handed out
        pool_recycle=1800,
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
            "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
            "application_name": "cds-service",
        },
    )


def insert(engine: sa.Engine, table: sa.Table):
    """An INSERT that can say ON CONFLICT in the engine's dialect."""
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)


# Errors that mean "the database did not answer" (refused, cut, timed out, locked too long,
# pool exhausted), as opposed to a defect in a statement (which stays a 500).
UNAVAILABLE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    return isinstance(error, sa.exc.DBAPIError) and bool(error.connection_invalidated)


# PostgreSQL's undefined_table and undefined_column: a database whose schema is behind this
# version (it was down when `serve` checked it, and came back at an older revision). Not a
# defect of a statement: the store is not usable until `cds-service db upgrade`.
SCHEMA_BEHIND_SQLSTATES = frozenset({"42P01", "42703"})


def is_schema_behind(error: BaseException) -> bool:
    return isinstance(error, sa.exc.ProgrammingError) and (
        getattr(error.orig, "sqlstate", None) in SCHEMA_BEHIND_SQLSTATES
    )


@contextlib.contextmanager
def answering(what: str) -> Iterator[None]:
    """Turn a database that does not answer, or whose schema is behind, into StoreUnavailable
    (logged by type only: a driver's message may hold a host, a user or a value)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as error:
        behind = is_schema_behind(error)
        if not (behind or is_unavailable(error)):
            raise
        cause = type(getattr(error, "orig", None) or error).__name__
        event = "store_schema_behind" if behind else "store_unavailable"
        log.warning(json.dumps({"event": event, "store": what, "error": cause}))
        metrics.store_error("replay" if what == "token replay" else what)
        raise StoreUnavailable(
            f"The {what} store is not available right now; send the same request again later",
        ) from None


def safe_url(url: str) -> str:
    """A database or Redis URL fit for a log line or a message: the password hidden."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparsable URL)"
