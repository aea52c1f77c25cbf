"""Server-side sessions for the console's sign-in: the browser holds only a random session id.

The cookie carries 32 random bytes (URL-safe base64) and nothing else; the session's data (the
signed-in user, the CSRF token, the ID token kept for sign-out, Authlib's `state`, `nonce` and
PKCE verifier while a sign-in is under way) stays on the server. The store is keyed by
HMAC-SHA256(CDS_CONSOLE_SESSION_SECRET, id), so a copy of the store holds no usable cookie, and
every instance given the same secret and store finds the same sessions.

Expiry: a signed-in session ends after `idle_s` without a request or `max_s` after sign-in,
whichever comes first; a sign-in under way ends after `PENDING_S`. Sign-in gives the session a
new id (no session fixation); sign-out deletes it. The store is SQLite in the data directory
(safe across the workers of one host); several hosts need a shared store with the same three
operations (`get`, `put`, `delete`).

Only requests under /console open a session: the CDS Hooks endpoints never read or set it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

PENDING_S = 600.0  # a sign-in under way (between /console/login and /console/callback)
TOUCH_S = 30.0  # `seen` is written at most this often per session (idle expiry's resolution)
_ID = re.compile(r"[A-Za-z0-9_-]{43}\Z")  # secrets.token_urlsafe(32)


class SessionStore(Protocol):
    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, record: dict, expires_at: float) -> None: ...

    def delete(self, key: str) -> None: ...


class SqliteSessionStore:
    """Sessions in SQLite (WAL): one file in the data directory, shared by the workers."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS console_session "
            "(key TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL)"
        )
        db.execute(
            "CREATE INDEX IF NOT EXISTS console_session_expiry ON console_session (expires_at)"
        )

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=10000")
            self._local.connection = connection
        return connection

    def get(self, key: str) -> dict | None:
        row = (
            self._connect()
            .execute(
                "SELECT record FROM console_session WHERE key = ? AND expires_at > ?",
                (key, self.clock()),
            )
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict, expires_at: float) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO console_session VALUES (?, ?, ?)",
            (key, json.dumps(record, separators=(",", ":")), expires_at),
        )

    def delete(self, key: str) -> None:
        self._connect().execute("DELETE FROM console_session WHERE key = ?", (key,))

    def sweep(self) -> int:
        """Drop expired sessions; how many."""
        cursor = self._connect().execute(
            "DELETE FROM console_session WHERE expires_at <= ?", (self.clock(),)
        )
        return cursor.rowcount

    def count(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM console_session").fetchone()[0]


class ConsoleSession(CallbackDict, SessionMixin):
    """`flask.session` under /console: a dict kept on the server."""

    def __init__(self, values: dict | None = None, sid: str | None = None, started: float = 0.0):
        def changed(_: CallbackDict) -> None:
            self.modified = True

        super().__init__(values or {}, changed)
        self.sid = sid
        self.started = started
        self.modified = False
        self.touched = False  # `seen` is due to be written
        self.stale_cookie = False  # the browser sent an id that names no live session
        self.rotate = False
        self.ended = False

    def renew(self) -> None:
        """A new id and a new start (at sign-in): the id a browser had before is worthless."""
        self.rotate = True
        self.modified = True

    def end(self) -> None:
        """Delete the session (sign-out, refusal): its id is worthless from now on."""
        self.clear()
        self.ended = True


@dataclass(frozen=True)
class CookiePolicy:
    name: str
    path: str
    secure: bool

    @classmethod
    def for_base_url(cls, base_url: str | None) -> CookiePolicy:
        """`__Host-` (Secure, Path=/, no Domain) when the console is served over https; over
        plain http (local testing) a cookie limited to the console's path."""
        from urllib.parse import urlsplit

        parts = urlsplit(base_url or "")
        if parts.scheme == "https":
            return cls("__Host-cds-console", "/", True)
        return cls("cds-console", (parts.path.rstrip("/") or "") + "/console", False)


class ServerSessionInterface(SessionInterface):
    def __init__(
        self,
        store: SessionStore,
        secret: str,
        cookie: CookiePolicy,
        idle_s: float,
        max_s: float,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self._secret = secret.encode()
        self.cookie = cookie
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock

    def key(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def expires_at(self, record: dict) -> float:
        if record["values"].get("user"):
            return min(record["seen"] + self.idle_s, record["started"] + self.max_s)
        return record["started"] + PENDING_S

    def open_session(self, app: Flask, request: Request) -> ConsoleSession | None:
        if not (request.path == "/console" or request.path.startswith("/console/")):
            return None  # a null session: nothing outside the console has one
        sid = request.cookies.get(self.cookie.name)
        if not sid:
            return ConsoleSession()
        now = self.clock()
        record = self.store.get(self.key(sid)) if _ID.match(sid) else None
        if record is None or self.expires_at(record) <= now:
            if record is not None:
                self.store.delete(self.key(sid))
            session = ConsoleSession()
            session.stale_cookie = True
            return session
        session = ConsoleSession(record["values"], sid, record["started"])
        session.touched = now - record["seen"] >= TOUCH_S
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, ConsoleSession):
            return
        if session.ended:
            if session.sid:
                self.store.delete(self.key(session.sid))
            if session.sid or session.stale_cookie:
                self._forget(response)
            return
        if not (session.modified or session.touched):
            if session.stale_cookie:
                self._forget(response)
            return
        if not session and session.sid is None:
            return  # nothing to keep
        now = self.clock()
        new_id = session.sid is None or session.rotate
        if new_id:
            if session.sid:
                self.store.delete(self.key(session.sid))
            session.sid = secrets.token_urlsafe(32)
            session.started = now
            sweep = getattr(self.store, "sweep", None)
            if sweep:
                sweep()  # each new session clears the expired ones: the store stays bounded
        record = {"started": session.started, "seen": now, "values": dict(session)}
        self.store.put(self.key(session.sid), record, self.expires_at(record))
        if new_id:
            response.set_cookie(
                self.cookie.name,
                session.sid,
                path=self.cookie.path,
                secure=self.cookie.secure,
                httponly=True,
                samesite="Lax",
            )
        response.vary.add("Cookie")

    def _forget(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie.name,
            path=self.cookie.path,
            secure=self.cookie.secure,
            httponly=True,
            samesite="Lax",
        )
