"""The console's sign-in sessions in Redis, so that every instance behind the load balancer
finds a session another instance opened (console/sessions.py keeps them in a SQLite file when
CDS_REDIS_URL is unset: one machine).

Keys are `<CDS_REDIS_KEY_PREFIX>console:<key>`, where the key is already the HMAC of the session
id (console/sessions.py): Redis holds no usable cookie. Redis forgets a session at its expiry
(`PXAT`). A Redis that does not answer is StoreUnavailable: the console answers 503, it never
signs anyone in or out on a guess."""

from __future__ import annotations

import json
import logging

import redis

from .. import metrics
from ..errors import StoreUnavailable
from .replay import redis_client

log = logging.getLogger("cds_service.stores")


class RedisSessionStore:
    def __init__(self, url: str, prefix: str):
        self._prefix = f"{prefix}console:"
        self._redis = redis_client(url)

    def _call(self, operation, *args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except redis.RedisError as error:
            event = {"event": "store_unavailable", "store": "redis", "error": type(error).__name__}
            log.warning(json.dumps(event))
            metrics.store_error("sessions")
            raise StoreUnavailable(
                "The console's session store is not available right now; try again later"
            ) from None

    def get(self, key: str) -> dict | None:
        raw = self._call(self._redis.get, self._prefix + key)
        return json.loads(raw) if raw else None

    def put(self, key: str, record: dict, expires_at: float) -> None:
        value = json.dumps(record, separators=(",", ":"))
        self._call(self._redis.set, self._prefix + key, value, pxat=max(1, int(expires_at * 1000)))

    def delete(self, key: str) -> None:
        self._call(self._redis.delete, self._prefix + key)

    def sweep(self) -> int:
        return 0  # Redis expires every key itself

    def close(self) -> None:
        self._redis.close()
