"""Service settings: built once from the environment and passed in (nothing read at import)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from . import fhirdates
from .errors import ConfigurationError

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
# http(s) on localhost, 127.0.0.1 or [::1], any port: flask-cors matches it against the whole
# Origin header.
LOOPBACK_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?\Z")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    max_body_bytes: int = 5 * 1024 * 1024
    fhir_deadline_s: float = 3.0
    fhir_connect_timeout_s: float = 1.0
    fhir_read_timeout_s: float = 2.5
    fhir_max_pages: int = 20
    fhir_max_entries: int = 10_000
    fhir_workers: int = 8
    auth_enabled: bool = True
    validate_responses: bool = False
    feedback_db: Path | None = None
    log_level: str = "INFO"
    # Pins "now" for reproducible demos and tests (the example patients are dated around it).
    fixed_now: datetime | None = None
    # Security (see auth.py): who may call, and how tokens are checked.
    trust_config: Path | None = None
    public_base_url: str | None = None
    jwt_leeway_s: float = 30.0
    jwt_max_lifetime_s: float = 3600.0
    jwks_ttl_s: float = 300.0
    jwks_min_refresh_s: float = 30.0
    # None: any origin with authentication on (every call carries a signed token), loopback
    # pages and the public CDS Hooks sandbox only under --no-auth (see `allowed_origins`).
    cors_origins: tuple[str, ...] | None = None
    log_hash_key: str | None = None
    # The review console (/console): None means on only when authentication is off.
    console_enabled: bool | None = None
    # Shared state for several instances (cds_service/stores): None keeps the embedded SQLite
    # files in data_dir. Never logged or shown with their password (repr=False).
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_key_prefix: str = "cds:replay:"

    @property
    def console_active(self) -> bool:
        return (not self.auth_enabled) if self.console_enabled is None else self.console_enabled

    @property
    def allowed_origins(self) -> list:
        """The browser origins CORS lets call the CDS Hooks endpoints. Without authentication
        any web page the user opens could otherwise call a local service (and store feedback):
        by default only pages on this machine and the public sandbox may."""
        if self.cors_origins is not None:
            return list(self.cors_origins)
        if self.auth_enabled:
            return ["*"]
        return [LOOPBACK_ORIGIN, SANDBOX_ORIGIN]

    @property
    def feedback_db_path(self) -> Path:
        return self.feedback_db or self.data_dir / "feedback.sqlite3"

    @property
    def audit_db_path(self) -> Path:
        return self.data_dir / "audit.sqlite3"

    @property
    def replay_db_path(self) -> Path:
        return self.data_dir / "replay.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read `CDS_*` variables; keyword overrides (from the CLI) win over the environment."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "data_dir": Path(env.get("CDS_DATA_DIR", "data")),
            "max_body_bytes": _int(env, "CDS_MAX_BODY_BYTES", 5 * 1024 * 1024),
            "fhir_deadline_s": _float(env, "CDS_FHIR_DEADLINE_S", 3.0),
            "fhir_connect_timeout_s": _float(env, "CDS_FHIR_CONNECT_TIMEOUT_S", 1.0),
            "fhir_read_timeout_s": _float(env, "CDS_FHIR_READ_TIMEOUT_S", 2.5),
            "fhir_max_pages": _int(env, "CDS_FHIR_MAX_PAGES", 20),
            "fhir_max_entries": _int(env, "CDS_FHIR_MAX_ENTRIES", 10_000),
            "fhir_workers": _int(env, "CDS_FHIR_WORKERS", 8),
            "validate_responses": _bool(env, "CDS_VALIDATE_RESPONSES", False),
            "feedback_db": Path(env["CDS_FEEDBACK_DB"]) if env.get("CDS_FEEDBACK_DB") else None,
            "log_level": env.get("CDS_LOG_LEVEL", "INFO").upper(),
            "fixed_now": _moment(env, "CDS_FIXED_NOW"),
            "trust_config": Path(env["CDS_TRUST_CONFIG"]) if env.get("CDS_TRUST_CONFIG") else None,
            "public_base_url": (env.get("CDS_PUBLIC_BASE_URL") or "").rstrip("/") or None,
            "jwt_leeway_s": _float(env, "CDS_JWT_LEEWAY_S", 30.0),
            "jwt_max_lifetime_s": _float(env, "CDS_JWT_MAX_LIFETIME_S", 3600.0),
            "jwks_ttl_s": _float(env, "CDS_JWKS_TTL_S", 300.0),
            "jwks_min_refresh_s": _float(env, "CDS_JWKS_MIN_REFRESH_S", 30.0),
            "cors_origins": tuple(
                o.strip() for o in env.get("CDS_CORS_ORIGINS", "").split(",") if o.strip()
            )
            or None,
            "log_hash_key": env.get("CDS_LOG_HASH_KEY") or None,
            "console_enabled": _bool(env, "CDS_CONSOLE", None),
            "database_url": _server_url(env, "CDS_DATABASE_URL", DATABASE_SCHEMES),
            "redis_url": _server_url(env, "CDS_REDIS_URL", REDIS_SCHEMES),
            "redis_key_prefix": env.get("CDS_REDIS_KEY_PREFIX") or "cds:replay:",
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss")


def _server_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """A server URL, checked for its form (never echoed: it may hold a password)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    example = f"{schemes[0]}://user@host:port/" + ("db" if name.endswith("DATABASE_URL") else "0")
    try:
        parts = urlsplit(raw)
        port = parts.port
        path = parts.path.lstrip("/")
    except ValueError:
        parts, port, path = None, None, ""
    ok = parts is not None and parts.scheme in schemes and bool(parts.hostname)
    if ok and schemes is REDIS_SCHEMES:
        ok = path == "" or path.isdigit()
    if ok and schemes is DATABASE_SCHEMES:
        ok = bool(path) and "/" not in path
    if not ok or (port is not None and not 0 < port < 65536):
        raise ConfigurationError(f"{name} must be a URL like {example}")
    return raw


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _moment(env: Mapping[str, str], name: str) -> datetime | None:
    raw = env.get(name)
    if not raw:
        return None
    moment = fhirdates.parse(raw)
    if moment is None:
        raise ConfigurationError(f"{name} must be an ISO 8601 date-time, got {raw!r}")
    return moment
