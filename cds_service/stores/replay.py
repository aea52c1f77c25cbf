"""Token ids seen (the `jti` replay cache), until the moment the verifier stops accepting the
token (its `exp` plus the leeway): in a SQLite file every worker of one machine shares, or in
Redis every instance shares (a token used on one instance is refused on the others)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator

import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import metrics
from ..cooperative import off_hub
from ..errors import StoreUnavailable
from .schema import seen_jti
from .sql import answering

log = logging.getLogger("cds_service.stores")

# A dead Redis costs a request at most about a second (two tries), never a hang.
REDIS_TIMEOUT_S = 0.5


class SqliteReplayStore:
    """Long expired ids are purged as new ones arrive."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        seen_jti.metadata.create_all(engine)  # a cache, not a record: no migrations

    # On every authenticated call: the statement as SQLite reads it, sent as is (building it
    # with SQLAlchemy's expression language cost 0.2 ms a call, the write itself 0.03 ms).
    _FIRST_USE = (
        "INSERT INTO seen_jti (iss, jti, exp) VALUES (?, ?, ?) "
        "ON CONFLICT (iss, jti) DO UPDATE SET exp = excluded.exp "
        "WHERE seen_jti.exp < ?"  # an expired earlier use frees the id
    )
    _PURGE = "DELETE FROM seen_jti WHERE exp < ?"

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        # In the hub's thread pool under gevent: sqlite3 blocks in C, and while another worker
        # holds the write lock its busy handler sleeps there, stopping every connection of
        # this worker (measured, ES384 per call, 2 workers, side by side: p99 36 ms against
        # 95-155 ms inline, req/s within 5 %).
        return off_hub(self._first_use, iss, jti, exp)

    def _first_use(self, iss: str, jti: str, exp: float) -> bool:
        # One statement on a pooled DBAPI connection, which autocommits (sqlite_engine turns
        # the sqlite3 module's BEGIN handling off): the upsert is atomic on its own, so the
        # SQLAlchemy Connection and its BEGIN/COMMIT round bought nothing but 75-90 us of CPU
        # a call (40 us against 115-133 us, process time, median of 9 x 1,000 calls).
        now = time.time()
        with answering("token replay"), _as_sqlalchemy_errors(self._FIRST_USE):
            connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(self._FIRST_USE, (iss, jti, exp, now))
                first = cursor.rowcount == 1
                if first and hash(jti) % 64 == 0:
                    cursor.execute(self._PURGE, (now - 3600,))
                cursor.close()
            finally:
                connection.close()  # back to the pool
        return first


@contextlib.contextmanager
def _as_sqlalchemy_errors(statement: str) -> Iterator[None]:
    """The sqlite3 error, wrapped as SQLAlchemy wraps it for a Connection (a locked or missing
    file an OperationalError): `answering` then tells "did not answer" from a defect."""
    try:
        yield
    except sqlite3.Error as error:
        raise sa.exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from error


def redis_client(url: str) -> redis.Redis:
    """A pooled client whose every call ends within about a second, answered or not."""
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),  # one more try: a pooled connection Redis closed
        health_check_interval=30,
    )


class RedisReplayStore:
    """`SET key 1 NX PXAT exp`: atomic across every instance; Redis forgets the id at `exp`.
    Keys are `<prefix><sha256 of iss and jti>` (a jti is up to 256 characters of the client's
    choosing). A Redis that does not answer is StoreUnavailable: the call is refused (503),
    since a replay cannot be ruled out."""

    def __init__(self, url: str, prefix: str):
        self._prefix = prefix
        self._redis = redis_client(url)

    def key(self, iss: str, jti: str) -> str:
        digest = hashlib.sha256(json.dumps([iss, jti]).encode()).hexdigest()
        return f"{self._prefix}{digest}"

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        until_ms = max(int(exp * 1000), int(time.time() * 1000) + 1)
        try:
            return bool(self._redis.set(self.key(iss, jti), b"1", nx=True, pxat=until_ms))
        except redis.RedisError as error:
            event = {"event": "store_unavailable", "store": "redis", "error": type(error).__name__}
            log.warning(json.dumps(event))
            metrics.store_error("replay")
            raise StoreUnavailable(
                "The token replay check is not available right now; send the request again "
                "later with a new token"
            ) from None

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()
