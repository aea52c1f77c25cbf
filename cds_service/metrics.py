"""Prometheus metrics: what the service did, counted per process and summed over the workers.

`cds-service serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before this module is
imported (server.py), so `prometheus_client` keeps every worker's values in memory-mapped files
there and `GET /metrics` adds them up. Without it (the Flask test client, the CLI) the values
live in this process.

Labels are bounded by construction: route templates (never raw paths), known service ids, rule
ids and override reason codes (anything else is "other"), HTTP status codes and small fixed
sets. No patient id, hash, card uuid, token or free text ever becomes a label.

`GET /metrics` is answered only to the socket peers in CDS_METRICS_ALLOW, without a client JWT.
To anyone else it does not exist: they get what any unknown path gets (404, or 401 when
authentication is on), so the answer does not reveal it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from functools import cache, wraps

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from .settings import Settings

log = logging.getLogger(__name__)

PATH = "/metrics"
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if MULTIPROCESS and values.ValueClass is values.MutexValue:  # imported before serve set the dir
    raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")

# Most hook calls take 1-100 ms (issue 15's p99 goal is 20 ms); a few long buckets show the
# calls that wait on a FHIR server (deadline 3 s by default).
HTTP_BUCKETS = (
    0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
FHIR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)

FHIR_OUTCOMES = ("ok", "timeout", "refused", "http_error", "invalid")
AUTH_REASONS = (
    "missing",
    "malformed",
    "algorithm",
    "issuer",
    "jku",
    "unknown_key",
    "signature",
    "expired",
    "not_yet_valid",
    "audience",
    "claims",
    "lifetime",
    "tenant",
    "replay",
    "other",
)
STORES = ("audit", "feedback", "replay", "analytics", "sessions", "quiet")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
INDICATORS = ("info", "warning", "critical")
OTHER = "other"
NONE = "none"

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "cds_http_requests",
    "HTTP requests answered, by route template, CDS service id and status code",
    ["endpoint", "service", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "cds_http_request_duration_seconds",
    "Time to make the answer (request read to response built), by route template and service",
    ["endpoint", "service"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
CARDS = Counter(
    "cds_cards",
    "Cards returned, by rule id and indicator",
    ["rule", "indicator"],
    registry=REGISTRY,
)
QUIETED = Counter(
    "cds_cards_quieted",
    "Cards left out of the answer because feedback quieted them for the patient, by rule id",
    ["rule"],
    registry=REGISTRY,
)
FHIR_REQUESTS = Counter(
    "cds_fhir_requests",
    "GET requests to a FHIR server for data missing from the prefetch, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
FHIR_LATENCY = Histogram(
    "cds_fhir_request_duration_seconds",
    "Time of one GET to a FHIR server (body read), by outcome",
    ["outcome"],
    buckets=FHIR_BUCKETS,
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "cds_auth_failures",
    "Calls refused with 401 for want of a valid client JWT, by reason",
    ["reason"],
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "cds_feedback",
    "Feedback items received in accepted feedback calls, by outcome and override reason code",
    ["outcome", "reason"],
    registry=REGISTRY,
)
SPOOL_DEPTH = Gauge(
    "cds_audit_spool_depth",
    "Audit rows waiting for the database in this instance's spool (every worker reads the same"
    " spool directory, so the largest live value)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
STORE_ERRORS = Counter(
    "cds_store_errors",
    "Failed reads or writes of a store, by store",
    ["store"],
    registry=REGISTRY,
)


# ---------------------------------------------------------------- what the code calls


def _never_fails(record: Callable) -> Callable:
    """Counting must never fail an answer (a full disk cannot grow the metric files): a failure
    is logged, once per process and function, and the request goes on."""
    failed = False

    @wraps(record)
    def guarded(*args, **kwargs):
        nonlocal failed
        try:
            return record(*args, **kwargs)
        except Exception as exc:
            if not failed:
                failed = True
                log.error(json.dumps({"event": "metrics_failed", "error": type(exc).__name__}))
            return None

    return guarded


@_never_fails
def fhir_request(outcome: str, started: float) -> None:
    """One GET to a FHIR server ended with `outcome` (one of FHIR_OUTCOMES); `started` is its
    time.monotonic() at the start."""
    elapsed = time.monotonic() - started
    counter, histogram = _fhir_children(outcome if outcome in FHIR_OUTCOMES else "invalid")
    counter.inc()
    histogram.observe(elapsed)


@_never_fails
def auth_failure(message: str) -> None:
    """A 401: `message` is the Unauthorized text (auth.py), mapped to a reason of AUTH_REASONS."""
    AUTH_FAILURES.labels(auth_reason(message)).inc()


@_never_fails
def feedback(items: Iterable[dict]) -> None:
    for item in items:
        outcome = item.get("outcome")
        reason = (item.get("overrideReason") or {}).get("reason") or {}
        code = reason.get("code")
        known = _reason_codes()
        FEEDBACK.labels(
            outcome if outcome in FEEDBACK_OUTCOMES else OTHER,
            NONE if code is None else (code if (reason.get("system"), code) in known else OTHER),
        ).inc()


@_never_fails
def store_error(store: str) -> None:
    """A store failed to read or write (`store` one of STORES)."""
    STORE_ERRORS.labels(store if store in STORES else OTHER).inc()


@_never_fails
def set_spool_depth(rows: int) -> None:
    """The audit rows waiting in the instance's spool directory (all its processes' files)."""
    SPOOL_DEPTH.set(rows)


# ---------------------------------------------------------------- auth reasons

# auth.py's refusal messages, by their start, in the order they are tried (tests check that
# every message auth.py can raise maps to a reason other than "other").
_AUTH_PREFIXES = (
    ("no Authorization header", "missing"),
    ("Authorization is not a Bearer token", "malformed"),
    ("malformed token", "malformed"),
    ("typ is not JWT", "malformed"),
    ("no kid", "malformed"),
    ("algorithm not allowed", "algorithm"),
    ("untrusted issuer", "issuer"),
    ("jku not on the allowlist", "jku"),
    ("unknown kid", "unknown_key"),
    ("JWKS URL is not https", "unknown_key"),
    ("iat in the future", "not_yet_valid"),
    ("lifetime over", "lifetime"),
    ("tenant not allowed", "tenant"),
    ("replayed jti", "replay"),
    ("claim ", "claims"),
)
# "token rejected: <PyJWT exception>" (or TypeError/ValueError/OverflowError: a wrong key).
_REJECTED = {
    "ExpiredSignatureError": "expired",
    "ImmatureSignatureError": "not_yet_valid",
    "InvalidAudienceError": "audience",
    "InvalidIssuerError": "issuer",
    "InvalidSignatureError": "signature",
    "MissingRequiredClaimError": "claims",
    "InvalidIssuedAtError": "claims",
    "InvalidJTIError": "claims",
    "InvalidSubjectError": "claims",
    "DecodeError": "malformed",
    "InvalidAlgorithmError": "algorithm",
    "TypeError": "signature",
    "ValueError": "signature",
    "OverflowError": "claims",
}
_REJECTED_PREFIX = "token rejected: "


def auth_reason(message: str) -> str:
    if message.startswith(_REJECTED_PREFIX):
        return _REJECTED.get(message[len(_REJECTED_PREFIX) :], OTHER)
    for prefix, reason in _AUTH_PREFIXES:
        if message.startswith(prefix):
            return reason
    return OTHER


# ---------------------------------------------------------------- the HTTP layer


def init_app(app: Flask, settings: Settings) -> None:
    """Count every answer; serve /metrics to the allowed peers. Call before the API blueprint
    is registered: the scrape must be answered before client authentication runs."""
    from .rules import RULE_IDS
    from .services import SERVICES

    _known_services.update(service.id for service in SERVICES)
    _known_rules.update(RULE_IDS)
    for outcome in FHIR_OUTCOMES:  # series at zero from the start: rate() and alerts see them
        _fhir_children(outcome)
    for reason in AUTH_REASONS:
        AUTH_FAILURES.labels(reason)
    for rule_id in RULE_IDS:
        QUIETED.labels(rule_id)
    for store in STORES:
        STORE_ERRORS.labels(store)
    SPOOL_DEPTH.set(0)
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.metrics_allow)
    app.before_request(lambda: _begin(networks))
    app.after_request(_count)


_known_services: set[str] = set()
_known_rules: set[str] = set()
_children: dict[tuple[str, str, int], tuple] = {}
_card_children: dict[tuple[str, str], Counter] = {}


def _count(response: Response) -> Response:
    _count_answer(response)
    return response


@_never_fails
def _count_answer(response: Response) -> None:
    # The request and g objects are looked up once: each access through Flask's proxies costs
    # about as much as a counter increment.
    req, state = request._get_current_object(), g._get_current_object()
    rule = req.url_rule
    endpoint = rule.rule if rule is not None else getattr(state, "metrics_endpoint", "unmatched")
    service = getattr(state, "service_id", None)
    if service is None:
        asked = req.view_args.get("service_id") if req.view_args else None
        service = NONE if asked is None else (asked if asked in _known_services else OTHER)
    status = response.status_code
    key = (endpoint, service, status)
    children = _children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(endpoint, service, str(status)),
            LATENCY.labels(endpoint, service),
        )
        _children[key] = children
    children[0].inc()
    started = getattr(state, "metrics_started", None)
    if started is not None:
        children[1].observe(time.monotonic() - started)
    cards = getattr(state, "cards", None)
    if cards:
        for _uuid, rule_id, indicator in cards:
            child = _card_children.get((rule_id, indicator))
            if child is None:
                child = CARDS.labels(
                    rule_id if rule_id in _known_rules else OTHER,
                    indicator if indicator in INDICATORS else OTHER,
                )
                if rule_id in _known_rules and indicator in INDICATORS:  # a bounded cache
                    _card_children[(rule_id, indicator)] = child
            child.inc()
    for rule_id in getattr(state, "quieted", None) or ():  # rule ids (issue 16)
        QUIETED.labels(rule_id if rule_id in _known_rules else OTHER).inc()


def _begin(networks: tuple) -> Response | None:
    req = request._get_current_object()
    g.metrics_started = time.monotonic()
    if not networks or req.path != PATH or req.method not in ("GET", "HEAD"):
        return None
    if not _peer_allowed(req.remote_addr, networks):
        return None  # answered as any unknown path: the endpoint is not revealed
    g.metrics_endpoint = PATH
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _peer_allowed(address: str | None, networks: tuple) -> bool:
    """The socket peer (never X-Forwarded-For: behind nginx the peer is nginx)."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@cache
def _fhir_children(outcome: str) -> tuple:
    return FHIR_REQUESTS.labels(outcome), FHIR_LATENCY.labels(outcome)


@cache
def _reason_codes() -> frozenset[tuple[str, str]]:
    """The (system, code) of every override reason the cards offer (cards/)."""
    from .cards import content

    loaded = content()
    system = loaded.common["override_reason_system"]
    reasons = list(loaded.common["override_reasons"])
    for card in loaded.cards.values():
        reasons += card.get("extra_override_reasons") or []
    return frozenset((system, r["code"]) for r in reasons)
