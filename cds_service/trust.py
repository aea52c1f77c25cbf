"""Who the service trusts: the operator's trust configuration (`CDS_TRUST_CONFIG`).

Minimal form (JSON, or YAML by the file's extension):

    {"issuers": [{"iss": "https://ehr.example.org",
                  "jwks": {"keys": [...]}            # or "jwks_url": "https://.../jwks.json"
                  "tenants": ["tenant-a"],           # optional: the allowed `tenant` claims
                  "fhir_servers": ["https://ehr.example.org/fhir"]}]}

Extensions: per issuer `jku_allowlist` (more JWKS URLs a token's `jku` may name); top level
`anonymous_discovery` (discovery without a token), `allow_http_loopback` (plain http to JWKS
and FHIR servers on 127.0.0.0/8 or localhost, for local testing), `dev_fhir_servers` (the FHIR
servers allowed under --no-auth; default: loopback addresses only).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator

from .errors import ConfigurationError

_SCHEMA = {
    "type": "object",
    "required": ["issuers"],
    "additionalProperties": False,
    "properties": {
        "issuers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["iss"],
                "additionalProperties": False,
                "properties": {
                    "iss": {"type": "string", "minLength": 1},
                    "jwks": {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array"}},
                    },
                    "jwks_url": {"type": "string", "pattern": "^https?://"},
                    "jku_allowlist": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^https?://"},
                    },
                    "tenants": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "fhir_servers": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^https?://"},
                    },
                },
                "oneOf": [{"required": ["jwks"]}, {"required": ["jwks_url"]}],
            },
        },
        "anonymous_discovery": {"type": "boolean"},
        "allow_http_loopback": {"type": "boolean"},
        "dev_fhir_servers": {"type": "array", "items": {"type": "string", "pattern": "^https?://"}},
    },
}


MAX_URL_CHARS = 2048
# RFC 3986 unreserved and reserved characters, and `%` of an escape: nothing else may appear.
_URL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)
_HEX = frozenset("0123456789abcdefABCDEF")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class BadUrl(ValueError):
    """Not a URL the service will send anything to; the message says why (never the URL)."""


@dataclass(frozen=True)
class HttpUrl:
    """An http(s) URL that passed `parse_http_url`: its text is its normal form, so what the
    policy checks (host, port) is what the HTTP client connects to."""

    scheme: str
    host: str  # lower case; an IPv6 literal without its brackets
    port: int | None
    path: str
    query: str | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = f"?{self.query}" if self.query is not None else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_http_url(text: object, *, query: bool = False) -> HttpUrl:
    """The one strict reading of a URL the service connects to (a request's `fhirServer`, a FHIR
    server's `next` links): `http://` or `https://`, a host in normal form (a lower-case DNS
    name, a dotted-quad IPv4 address in decimal, or a compressed IPv6 literal), an optional
    decimal port, a path without dot segments; a query only when `query` is true. Refused
    (BadUrl): backslashes, spaces, controls and other characters outside RFC 3986, user
    information, fragments, and any host other parsers could read differently (`127.1`,
    `0x7f000001`, `LOCALHOST`, `localhost.`, percent escapes)."""
    if not isinstance(text, str):
        raise BadUrl("is not a string")
    if len(text) > MAX_URL_CHARS:
        raise BadUrl(f"is longer than {MAX_URL_CHARS} characters")
    if not text or not set(text) <= _URL_CHARS:
        raise BadUrl(
            "holds a character a URL may not hold (a backslash, space, control character or "
            "non-ASCII letter)"
        )
    if "#" in text:
        raise BadUrl("has a fragment (#...)")
    scheme, separator, rest = text.partition("://")
    if not separator or scheme not in ("http", "https"):
        raise BadUrl("must start with http:// or https:// (in lower case)")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:end], rest[end:]
    path, question, query_text = rest.partition("?")
    if "@" in authority:
        raise BadUrl("has user information (user@host)")
    host, port = _host_and_port(authority)
    if question and not query:
        raise BadUrl("has a query (?...)")
    if not _escapes_valid(path) or (question and not _escapes_valid(query_text)):
        raise BadUrl("has a % that does not begin a percent escape")
    segments = path.split("/")[1:]
    if any(segment.lower() in (".", "..", "%2e", "%2e%2e", ".%2e", "%2e.") for segment in segments):
        raise BadUrl("has a dot segment (/./ or /../) in its path")
    return HttpUrl(scheme, host, port, path, query_text if question else None)


def _host_and_port(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        literal, bracket, after = authority[1:].partition("]")
        if not bracket:
            raise BadUrl("has an IPv6 host without its closing bracket")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise BadUrl("has an IPv6 host that is not an IPv6 address") from None
        if address.compressed != literal:
            raise BadUrl("has an IPv6 host not in normal form (compressed, lower case)")
        host, port_text = literal, after
        if port_text and not port_text.startswith(":"):
            raise BadUrl("has something other than a port after its IPv6 host")
        port_text = port_text[1:] if port_text else None
    else:
        host, colon, port_text = authority.partition(":")
        port_text = port_text if colon else None
        _check_host(host)
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise BadUrl("has a port that is not a number")
    if port_text.startswith("0") or not 0 < int(port_text) < 65536:
        raise BadUrl("has a port outside 1-65535 or with a leading zero")
    return host, int(port_text)


def _check_host(host: str) -> None:
    if not host:
        raise BadUrl("has no host")
    if host != host.lower():
        raise BadUrl("has a host not in normal form (lower case)")
    if len(host) > 253 or not set(host) <= _LABEL_CHARS | {"."}:
        raise BadUrl("has a host that is not a DNS name or an IP address")
    labels = host.split(".")
    last = labels[-1]
    # A host ending in a number is an IPv4 address to URL parsers and resolvers alike, in
    # forms they disagree on (`127.1`, `0x7f.1`, `017.0.0.1`): only the dotted quad is read.
    if last.isdigit() or (last.startswith("0x") and set(last[2:]) <= _HEX):
        if len(labels) != 4 or any(
            not label.isdigit() or str(int(label)) != label or int(label) > 255 for label in labels
        ):
            raise BadUrl("has a numeric host that is not a dotted-quad IPv4 address in decimal")
        return
    for label in labels:
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise BadUrl("has a host that is not a DNS name in normal form")


def _escapes_valid(text: str) -> bool:
    index = text.find("%")
    while index >= 0:
        if not set(text[index + 1 : index + 3]) <= _HEX or len(text) < index + 3:
            return False
        index = text.find("%", index + 3)
    return True


def normalise_url(url: str) -> str:
    """Scheme and host in lower case, no trailing slash, no fragment: how allowlists compare
    URLs. The query stays: a URL with another query is another URL."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}{query}"


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Issuer:
    iss: str
    jwks: dict | None
    jwks_url: str | None
    jku_allowlist: frozenset[str]
    tenants: frozenset[str]
    fhir_servers: frozenset[str]

    def allows_jku(self, jku: str) -> bool:
        return normalise_url(jku) in self.jku_allowlist


@dataclass(frozen=True)
class TrustConfig:
    issuers: dict[str, Issuer] = field(default_factory=dict)
    anonymous_discovery: bool = False
    allow_http_loopback: bool = False
    dev_fhir_servers: frozenset[str] = frozenset()

    def secure_url(self, url: str) -> bool:
        """HTTPS, or plain http to a loopback address when the operator allowed it."""
        scheme = urlsplit(url).scheme.lower()
        return scheme == "https" or (
            scheme == "http" and self.allow_http_loopback and is_loopback(url)
        )

    def fhir_server_allowed(self, url: str, issuer: Issuer | None) -> bool:
        """May the access token be sent to this FHIR server? `issuer` None means --no-auth.

        Decided on the strict reading the HTTP client will connect to (`parse_http_url`); a URL
        that reading refuses raises BadUrl (a ValueError)."""
        parsed = parse_http_url(url)
        canonical = normalise_url(str(parsed))
        if issuer is None:  # development mode: loopback, or what the operator listed
            if self.dev_fhir_servers:
                return canonical in self.dev_fhir_servers
            return parsed.is_loopback
        secure = parsed.scheme == "https" or (self.allow_http_loopback and parsed.is_loopback)
        return canonical in issuer.fhir_servers and secure


def load_trust(path: Path | None) -> TrustConfig:
    if path is None:
        return TrustConfig()
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigurationError(f"CDS_TRUST_CONFIG {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"CDS_TRUST_CONFIG {path} is not valid: {exc}") from None
    errors = sorted(Draft202012Validator(_SCHEMA).iter_errors(document), key=lambda e: e.path)
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "top level"
        raise ConfigurationError(f"CDS_TRUST_CONFIG {path}: {where}: {errors[0].message}")
    issuers = {}
    for entry in document["issuers"]:
        jku_allowlist = {normalise_url(u) for u in entry.get("jku_allowlist", [])}
        if entry.get("jwks_url"):
            jku_allowlist.add(normalise_url(entry["jwks_url"]))
        issuers[entry["iss"]] = Issuer(
            iss=entry["iss"],
            jwks=entry.get("jwks"),
            jwks_url=entry.get("jwks_url"),
            jku_allowlist=frozenset(jku_allowlist),
            tenants=frozenset(entry.get("tenants", [])),
            fhir_servers=frozenset(normalise_url(u) for u in entry.get("fhir_servers", [])),
        )
    config = TrustConfig(
        issuers=issuers,
        anonymous_discovery=bool(document.get("anonymous_discovery", False)),
        allow_http_loopback=bool(document.get("allow_http_loopback", False)),
        dev_fhir_servers=frozenset(normalise_url(u) for u in document.get("dev_fhir_servers", [])),
    )
    for issuer in issuers.values():
        for url in [issuer.jwks_url or "", *issuer.jku_allowlist, *issuer.fhir_servers]:
            if url and not config.secure_url(url):
                raise ConfigurationError(
                    f"CDS_TRUST_CONFIG {path}: {url} must use https "
                    "(plain http only to loopback with allow_http_loopback)"
                )
    return config
