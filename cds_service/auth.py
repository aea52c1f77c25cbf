"""Client authentication (CDS Hooks 2.0 "Trusting CDS Clients"): a signed JWT on every call.

Checked, in order: a Bearer token; header `alg` asymmetric (never `none` or HMAC), `typ` JWT,
`kid`; a trusted `iss`; a `jku`, if any, on the issuer's allowlist; the signature with the
issuer's configured key for `kid` (inline, or from its JWKS URL, refetched once, rate-limited,
on an unknown kid: key rotation; an allowed `jku` is fetched only when the configured keys lack
the kid); `aud` the URL of the endpoint invoked; `exp`, `iat` (with a small leeway; every
claim read must be of its RFC 7519 type), `jti` never seen while the token could still be
accepted, i.e. until `exp` plus the leeway (cds_service.stores: a SQLite file all workers share,
or Redis all instances share; one that does not answer refuses the call with a 503);
`tenant` among
the issuer's tenants when the operator lists some. Any failure is a bare 401 to the caller;
the reason goes to the log, never the token.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import jwt
import requests

from .trust import Issuer, TrustConfig, normalise_url

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
JWKS_TIMEOUT_S = (2.0, 3.0)
MAX_JWKS_BYTES = 1024 * 1024


class Unauthorized(Exception):
    """The call is refused with a bare 401; the message is for the log only."""


@dataclass(frozen=True)
class Caller:
    issuer: Issuer
    tenant: str | None


class ReplayStore(Protocol):
    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        """Record the token id until `exp` (the moment the verifier stops accepting the token:
        its `exp` claim plus the leeway); False when it was seen before (a replay)."""


class KeySource:
    """Public keys per issuer: inline JWKS, or a JWKS URL fetched over HTTPS, cached with a TTL,
    refetched once on an unknown kid, and never more often than the minimum refresh interval
    (a stream of tokens with made-up kids cannot make the service hammer the JWKS URL)."""

    def __init__(self, trust: TrustConfig, ttl_s: float, min_refresh_s: float):
        self._trust = trust
        self._ttl, self._min_refresh = ttl_s, min_refresh_s
        self._cache: dict[str, tuple[float, dict[str, jwt.PyJWK]]] = {}
        self._last_fetch: dict[str, float] = {}
        self._inline: dict[str, dict[str, jwt.PyJWK]] = {}  # parsed once per issuer
        self._lock = threading.Lock()  # guards _fetching only
        self._fetching: dict[str, threading.Lock] = {}  # one fetch at a time per JWKS URL
        self._http = requests.Session()
        self._http.trust_env = False

    def key(self, issuer: Issuer, kid: str, jku: str | None) -> jwt.PyJWK:
        """The issuer's key for `kid`. The configured keys (inline `jwks`, or those published at
        `jwks_url`) come first, whatever `jku` the token names: a `jku` (already checked against
        the issuer's allowlist) is fetched only when they lack the kid, so a client that names
        its published JWKS URL is verified offline when its keys are inlined."""
        # One spelling per JWKS URL (case, trailing slash): one cache entry and one rate limit,
        # and the URL fetched is the operator's, never a variant a token spelt.
        jku_url = normalise_url(jku) if jku else None
        configured_url = issuer.jwks_url
        if issuer.jwks is not None:
            keys = self._inline.get(issuer.iss)
            if keys is None:
                keys = self._inline[issuer.iss] = _parse_jwks(issuer.jwks)
            if kid in keys:
                return keys[kid]
        elif configured_url:
            # An unknown kid at the issuer's own JWKS URL is refetched once (key rotation);
            # when the token names another allowed jku, that one is asked instead.
            own = jku_url is None or jku_url == normalise_url(configured_url)
            keys = self._remote(configured_url, refresh=False)
            if kid not in keys and own:
                keys = self._remote(configured_url, refresh=True)
            if kid in keys:
                return keys[kid]
            if own:
                raise Unauthorized(f"unknown kid for issuer {issuer.iss} after JWKS refresh")
        if jku_url is None:
            raise Unauthorized(f"unknown kid for issuer {issuer.iss}")
        keys = self._remote(jku_url, refresh=False)
        if kid not in keys:
            keys = self._remote(jku_url, refresh=True)
        if kid not in keys:
            raise Unauthorized(f"unknown kid for issuer {issuer.iss} after fetching its jku")
        return keys[kid]

    def _remote(self, url: str, refresh: bool) -> dict[str, jwt.PyJWK]:
        cached = self._cache.get(url)
        if cached is not None and not refresh and time.monotonic() - cached[0] < self._ttl:
            return cached[1]  # the common case takes no lock
        with self._lock:
            url_lock = self._fetching.setdefault(url, threading.Lock())
        # A slow JWKS URL holds up only the tokens that need it; threads asking for the same
        # URL meanwhile wait, then find the fresh keys (or the rate limit) without a fetch.
        with url_lock:
            now = time.monotonic()
            cached = self._cache.get(url)
            fresh = cached is not None and now - cached[0] < self._ttl
            if cached is not None and (fresh and not refresh):
                return cached[1]
            if now - self._last_fetch.get(url, -1e9) < self._min_refresh:
                return cached[1] if cached else {}
            self._last_fetch[url] = now
            if not self._trust.secure_url(url):
                raise Unauthorized(f"JWKS URL is not https: {url}")
            try:
                response = self._http.get(url, timeout=JWKS_TIMEOUT_S, allow_redirects=False)
                if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
                    raise ValueError(f"HTTP {response.status_code}")
                keys = _parse_jwks(response.json())
            except (requests.RequestException, ValueError) as exc:
                event = {"event": "jwks_fetch_failed", "url": url, "error": type(exc).__name__}
                log.warning(json.dumps(event))
                return cached[1] if cached else {}
            self._cache[url] = (now, keys)
            return keys


def _parse_jwks(document: object) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for entry in (document or {}).get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(entry, dict) or not entry.get("kid") or entry.get("kty") == "oct":
            continue  # symmetric keys are never trusted
        try:
            keys[str(entry["kid"])] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, ValueError, TypeError, KeyError):
            log.warning(json.dumps({"event": "jwks_key_skipped", "kid": str(entry["kid"])[:64]}))
    return keys


class Authenticator:
    def __init__(
        self,
        trust: TrustConfig,
        keys: KeySource,
        replay: ReplayStore,
        leeway_s: float,
        max_lifetime_s: float = 3600.0,
    ):
        self.trust, self._keys, self._replay, self._leeway = trust, keys, replay, leeway_s
        self._max_lifetime = max_lifetime_s

    def verify(self, authorization: str | None, audience: str) -> Caller:
        token = _bearer(authorization)
        try:  # one unverified pass for the header and issuer; the signature is checked below
            parts = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        header, unverified = parts["header"], parts["payload"]
        if not isinstance(unverified, dict) or not isinstance(header, dict):
            raise Unauthorized("malformed token")
        _check_claim_types(unverified)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized(f"algorithm not allowed: {str(alg)[:16]}")
        if str(header.get("typ", "")).upper() != "JWT":
            raise Unauthorized("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("no kid")
        iss = unverified.get("iss")
        issuer = self.trust.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"untrusted issuer {str(unverified.get('iss'))[:128]}")
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or not issuer.allows_jku(jku)):
            raise Unauthorized(f"jku not on the allowlist of {issuer.iss}")
        key = self._keys.key(issuer, kid, jku)
        try:
            claims = _checked(
                token, parts, header, unverified, key.key, alg, audience, issuer.iss, self._leeway
            )
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError) as exc:  # a wrong key too
            raise Unauthorized(f"token rejected: {type(exc).__name__}") from None
        if claims["iat"] > time.time() + self._leeway:
            raise Unauthorized("iat in the future")
        # A token good for days could be replayed for days once its jti row is gone; EHRs sign
        # each call with a lifetime of minutes.
        if claims["exp"] - claims["iat"] > self._max_lifetime:
            raise Unauthorized(f"lifetime over {self._max_lifetime:g} s")
        tenant = claims.get("tenant")
        if issuer.tenants and (not isinstance(tenant, str) or tenant not in issuer.tenants):
            raise Unauthorized(f"tenant not allowed for {issuer.iss}")
        # Remembered for as long as the token is accepted: its exp plus the leeway allowed above
        # (a store that forgot it at exp would take the token again within the leeway).
        remember_until = float(claims["exp"]) + self._leeway
        if not self._replay.first_use(issuer.iss, claims["jti"], remember_until):
            raise Unauthorized(f"replayed jti from {issuer.iss}")
        return Caller(issuer, tenant if isinstance(tenant, str) else None)


# PyJWT's signature check and claim checks, called as its decode() calls them once it has
# parsed the token, on the parse verify() already made (the same bytes, read by the same PyJWT
# code): parsing it a second time cost 40-60 us a call, as much as an RSA-3072 signature.
# tests/test_auth_single_parse.py holds the two ways equal. They are PyJWT's private methods
# (unchanged from 2.10 to 2.15): a PyJWT without them gets jwt.decode() itself, never an error.
_REQUIRED = {"require": ["iss", "aud", "exp", "iat", "jti"]}
_JWT = jwt.PyJWT(options=_REQUIRED)
_JWS = jwt.PyJWS()
_SINGLE_PARSE = callable(getattr(_JWS, "_verify_signature", None)) and callable(
    getattr(_JWT, "_validate_claims", None)
)


def _checked(token, parts, header, unverified, key, alg, audience, iss, leeway) -> dict:
    """The token's claims once its signature (by `key`, with `alg` only) and its registered
    claims (exp, nbf, iat, aud, iss, the required ones) are good; PyJWT's errors otherwise."""
    if not _SINGLE_PARSE:
        return jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=audience,
            issuer=iss,
            leeway=leeway,
            options=_REQUIRED,
        )
    signing_input = token.encode("utf-8").rsplit(b".", 1)[0]
    # the public key itself: the header's (allowed) alg decides
    _JWS._verify_signature(signing_input, header, parts["signature"], key, [alg])
    _JWT._validate_claims(unverified, _JWT.options, audience=audience, issuer=iss, leeway=leeway)
    return unverified


MAX_JTI_CHARS = 256
_TIME_CLAIMS = ("exp", "iat", "nbf")


def _check_claim_types(payload: dict) -> None:
    """Each claim the service reads, of the type RFC 7519 gives it (checked before any
    arithmetic: a string `exp` or an infinite `iat` is a refusal, never an exception)."""
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        if name not in payload and name == "nbf":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or abs(value) > MAX_NUMERIC_DATE  # exact for ints: never converted to float
        ):
            raise Unauthorized(f"claim {name} is not a NumericDate")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise Unauthorized(f"claim jti is not a string of 1 to {MAX_JTI_CHARS} characters")
    if not isinstance(payload.get("iss"), str):
        raise Unauthorized("claim iss is not a string")
    aud = payload.get("aud")
    if not isinstance(aud, str) and not (
        isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud)
    ):
        raise Unauthorized("claim aud is not a string or a list of strings")
    if "tenant" in payload and not isinstance(payload["tenant"], str):
        raise Unauthorized("claim tenant is not a string")


# Year 9999: beyond it a NumericDate is no date this service can compare.
MAX_NUMERIC_DATE = 253_402_300_799


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization is not a Bearer token")
    return token.strip()


def audience_url(base_url: str, path: str) -> str:
    return normalise_url(base_url) + path
