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
        """May the access token be sent to this FHIR server? `issuer` None means --no-auth."""
        if issuer is None:  # development mode: loopback, or what the operator listed
            if self.dev_fhir_servers:
                return normalise_url(url) in self.dev_fhir_servers
            return is_loopback(url)
        return normalise_url(url) in issuer.fhir_servers and self.secure_url(url)


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
