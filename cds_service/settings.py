"""Service settings: built once from the environment and passed in (nothing read at import)."""

from __future__ import annotations

import ipaddress
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
    # The review console (/console): None means on when authentication is off, or when it is on
    # and console sign-in (OpenID Connect, `console_oidc`) is configured.
    console_enabled: bool | None = None
    # Shared state for several instances (cds_service/stores): None keeps the embedded SQLite
    # files in data_dir. Never logged or shown with their password (repr=False).
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_key_prefix: str = "cds:replay:"
    console_oidc: ConsoleOidc | None = None
    # Who may read /metrics (socket peers: addresses or CIDR networks); empty: no /metrics.
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")

    @property
    def console_active(self) -> bool:
        if self.console_enabled is not None:
            return self.console_enabled
        return not self.auth_enabled or self.console_oidc is not None

    @property
    def console_sign_in(self) -> bool:
        """The console is served behind OpenID Connect sign-in (auth on, OIDC configured)."""
        return self.console_active and self.auth_enabled and self.console_oidc is not None

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
            "console_oidc": console_oidc_from_env(env),
            "metrics_allow": _networks(env, "CDS_METRICS_ALLOW", ("127.0.0.1", "::1")),
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


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list of IP addresses or CIDR networks; `off`: none."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() == "off":
        return ()
    try:
        return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in raw.split(","))
    except ValueError:
        raise ConfigurationError(
            f"{name} must be off or a comma list of IP addresses or networks, got {raw!r}"
        ) from None


def _moment(env: Mapping[str, str], name: str) -> datetime | None:
    raw = env.get(name)
    if not raw:
        return None
    moment = fhirdates.parse(raw)
    if moment is None:
        raise ConfigurationError(f"{name} must be an ISO 8601 date-time, got {raw!r}")
    return moment


# ------------------------------------------------------------------ console sign-in (OIDC)


@dataclass(frozen=True)
class ConsoleOidc:
    """OpenID Connect sign-in for the review console (see cds_service/console/signin.py)."""

    issuer: str
    client_id: str
    client_secret: str | None = field(repr=False)  # None: a public client (PKCE alone)
    claim: str  # the ID token / userinfo claim that grants access, e.g. `groups` or `roles`
    allowed: tuple[str, ...]  # any of these values in the claim grants access
    session_secret: str = field(repr=False)  # keys the session store (same on every instance)
    scope: str = "openid profile"
    session_idle_s: float = 1800.0
    session_max_s: float = 28800.0


_OIDC_VARS = (
    "CDS_CONSOLE_OIDC_CLIENT_ID",
    "CDS_CONSOLE_OIDC_CLIENT_SECRET",
    "CDS_CONSOLE_OIDC_CLIENT_SECRET_FILE",
    "CDS_CONSOLE_OIDC_CLAIM",
    "CDS_CONSOLE_OIDC_ALLOWED",
    "CDS_CONSOLE_OIDC_SCOPE",
)
MIN_SESSION_SECRET = 32


def console_oidc_from_env(env: Mapping[str, str]) -> ConsoleOidc | None:
    """Console sign-in from `CDS_CONSOLE_OIDC_*`: None when no issuer is set, else complete or
    a ConfigurationError naming the variable to set."""
    issuer = env.get("CDS_CONSOLE_OIDC_ISSUER", "").strip()
    if not issuer:
        stray = next((name for name in _OIDC_VARS if env.get(name)), None)
        if stray:
            raise ConfigurationError(
                f"{stray} is set but CDS_CONSOLE_OIDC_ISSUER is not: set the issuer to turn "
                "console sign-in on"
            )
        return None
    parts = urlsplit(issuer)
    loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)) or (
        not parts.hostname or parts.query or parts.fragment
    ):
        raise ConfigurationError(
            "CDS_CONSOLE_OIDC_ISSUER must be the provider's https URL, as its discovery "
            f"document names it (http only on loopback, for testing), got {issuer!r}"
        )
    required = {}
    for name in ("CDS_CONSOLE_OIDC_CLIENT_ID", "CDS_CONSOLE_OIDC_CLAIM"):
        required[name] = env.get(name, "").strip()
        if not required[name]:
            raise ConfigurationError(f"console sign-in (CDS_CONSOLE_OIDC_ISSUER) needs {name}")
    allowed = tuple(
        v.strip() for v in env.get("CDS_CONSOLE_OIDC_ALLOWED", "").split(",") if v.strip()
    )
    if not allowed:
        raise ConfigurationError(
            "console sign-in needs CDS_CONSOLE_OIDC_ALLOWED: the comma-separated values of "
            f"the {required['CDS_CONSOLE_OIDC_CLAIM']} claim that grant access"
        )
    session_secret = _secret(env, "CDS_CONSOLE_SESSION_SECRET")
    if not session_secret or len(session_secret) < MIN_SESSION_SECRET:
        raise ConfigurationError(
            f"console sign-in needs CDS_CONSOLE_SESSION_SECRET (or _FILE) of at least "
            f"{MIN_SESSION_SECRET} characters, the same on every instance (openssl rand -hex 32)"
        )
    scope = env.get("CDS_CONSOLE_OIDC_SCOPE", "").strip() or "openid profile"
    if "openid" not in scope.split():
        raise ConfigurationError(f"CDS_CONSOLE_OIDC_SCOPE must include openid, got {scope!r}")
    return ConsoleOidc(
        issuer=issuer,
        client_id=required["CDS_CONSOLE_OIDC_CLIENT_ID"],
        client_secret=_secret(env, "CDS_CONSOLE_OIDC_CLIENT_SECRET"),
        claim=required["CDS_CONSOLE_OIDC_CLAIM"],
        allowed=allowed,
        session_secret=session_secret,
        scope=scope,
        session_idle_s=_float(env, "CDS_CONSOLE_SESSION_IDLE_S", 1800.0),
        session_max_s=_float(env, "CDS_CONSOLE_SESSION_MAX_S", 28800.0),
    )


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """`NAME`, or the content of the file `NAME_FILE` names (one trailing newline dropped)."""
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value and path:
        raise ConfigurationError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text("utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"{name}_FILE {path}: {getattr(exc, 'strerror', exc)}"
            ) from None
    return value or None
