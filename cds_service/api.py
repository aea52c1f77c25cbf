"""HTTP: discovery, invocation and feedback. Thin: parse, delegate, map errors to statuses."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Flask, Response, current_app, g, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from . import __version__, jsonio, metrics
from .audit import PatientHasher
from .auth import Authenticator, Unauthorized, audience_url
from .errors import (
    CdsError,
    InvalidRequest,
    Issue,
    StoreUnavailable,
    UnsupportedMediaType,
    operation_outcome,
)
from .feedback import parse_feedback
from .quiet import today  # at import, not per hook call (an import statement costs 1 us)
from .services import SERVICES, find_service
from .stores import AuditStore
from .trust import BadUrl, TrustConfig, parse_http_url

log = logging.getLogger("cds_service.access")
bp = Blueprint("cds", __name__)


PUBLIC_PATHS = frozenset({"/health", "/health/ready", "/openapi.json"})


@dataclass(frozen=True)
class Security:
    """What the HTTP layer needs to authenticate callers and keep their tokens safe."""

    enabled: bool
    trust: TrustConfig
    authenticator: Authenticator | None
    public_base_url: str | None
    hasher: PatientHasher
    audit: AuditStore

    def fhir_server_allowed(self, url: str) -> bool:
        if g.get("console_user"):  # a signed-in console reviewer: prefetch only (console/signin)
            return False
        caller = g.get("caller")
        try:
            return self.trust.fhir_server_allowed(url, caller.issuer if caller else None)
        except ValueError:  # not a parsable URL (e.g. `https://[x`): never allowed
            return False


def response_header(response: Response, name: str) -> str | None:
    """`response.headers.get(name)`, the same first match by case-insensitive name, without
    Werkzeug's KeyError raised and caught for a header the response lacks: 1.6 -> 0.3 us, and
    the hook call's after-request hooks ask twice for headers it does not have."""
    wanted = name.lower()
    for key, value in response.headers:
        if key.lower() == wanted:
            return value
    return None


def json_response(body: object, status: int = 200) -> Response:
    return Response(jsonio.dumps(body), status=status, mimetype="application/json")


def read_json() -> object:
    """The body as JSON, or a CdsError that says what is wrong with it."""
    req = request._get_current_object()  # one context-local lookup, not six (~1 us each)
    mimetype = req.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got '{mimetype or 'none'}'",
            "Content-Type",
        )
    try:
        raw = req.get_data(cache=False)  # bounded by MAX_CONTENT_LENGTH (413 beyond)
        if req.content_length is None and req.environ.get("wsgi.input_terminated"):
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            if limit is not None and len(raw) >= limit and req.environ["wsgi.input"].read(1):
                # A streamed (chunked) body is cut at the limit without a word from Werkzeug:
                # the byte after it says the body was larger, not malformed.
                raise RequestEntityTooLarge()
    except (ParseException, OSError, ClientDisconnected):  # broken chunked framing, cut short
        raise InvalidRequest("The request body could not be read as sent", "body") from None
    try:
        return jsonio.fast_loads(raw)
    except jsonio.Fallback:  # read by `json`, which says what is wrong, or reads it as before
        return _read_with_json(raw)


def _read_with_json(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8", "body") from None
    try:
        body = json.loads(text, parse_constant=_not_json, parse_int=_bounded_int)
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply", "body") from None
    except _NotJson as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc} is not a JSON number)", "body"
        ) from None
    except _TooManyDigits:
        raise InvalidRequest(
            f"The request body has an integer of more than {MAX_INT_DIGITS} digits", "body"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON (line {exc.lineno}, column {exc.colno})", "body"
        ) from None
    except ValueError:  # any other refusal of the parser: never a 500
        raise InvalidRequest("The request body is not valid JSON", "body") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(body):
        raise InvalidRequest(
            "The request body has a \\u escape of an unpaired UTF-16 surrogate, which is not "
            "a Unicode character (RFC 7493)",
            "body",
        )
    return body


class _NotJson(ValueError):
    pass


# No value a CDS Hooks request carries needs more digits (FHIR's integer64 has 19); Python
# refuses to convert over 4,300 and its conversion slows with the square of the length.
MAX_INT_DIGITS = 40


class _TooManyDigits(ValueError):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooManyDigits()
    return int(text)


def _not_json(constant: str) -> float:
    """Python reads NaN and Infinity, JSON has no such numbers: a lab value must not be one."""
    raise _NotJson(constant)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(body: object) -> bool:
    """Whether a string of the parsed body holds a surrogate that is not half of a pair (only
    escapes can put one there; a pair is one character by then). Without recursion: the body
    may be nested as deep as the parser allows."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


@bp.get("/health")
def health():
    """Liveness: 200 while this process can serve (hook calls are answered even with the
    database down: their audit rows spool). Says whether the database and Redis answer."""
    state = current_app.extensions["cds_stores"].health()
    return json_response({"status": "ok", "version": __version__, **state})


@bp.get("/health/ready")
def ready():
    """Readiness: 503 with the reason while a configured database or Redis does not answer,
    or the database's schema is behind (from the state the worker last found: never waits)."""
    from .stores.health import readiness

    state = current_app.extensions["cds_stores"].health()
    reason = readiness(state)
    body = {"status": "unavailable" if reason else "ok", "version": __version__, **state}
    if reason:
        body["reason"] = reason
    return json_response(body, 503 if reason else 200)


@bp.get("/openapi.json")
def openapi_document():
    from .openapi import document

    return json_response(document())


@bp.get("/cds-services")
def discovery():
    return json_response({"services": [service.discovery_entry() for service in SERVICES]})


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str):
    # The request globals and the app are looked up once: each `g.x` or `current_app.x` goes
    # through a context-local proxy (about 1 us each; this view made a dozen).
    state, app = g._get_current_object(), current_app._get_current_object()
    service = find_service(service_id)
    state.service_id = service.id
    body = read_json()
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object", "body")
    state.hook_instance = (
        body.get("hookInstance") if isinstance(body.get("hookInstance"), str) else None
    )
    if isinstance(body.get("fhirServer"), str):
        check_fhir_server(body["fhirServer"])
    security = app.extensions["cds_security"]
    context = body.get("context")
    if isinstance(context, dict) and isinstance(context.get("patientId"), str):
        caller = state.get("caller")
        state.patient = security.hasher.patient(
            context["patientId"],
            caller.issuer.iss if caller else None,
            caller.tenant if caller else None,
        )
    outcome = app.extensions["cds_engine"].evaluate(
        service, body, fhir_allowed=security.fhir_server_allowed
    )
    state.rule_ids = outcome.rule_ids
    state.fetched = outcome.fetched
    state.tolerated = outcome.tolerated
    # Issue 16: cards feedback quieted for this patient are left out, and audited as quieted.
    shown = app.extensions["cds_quiet"].apply(
        state.get("patient"), outcome.response["cards"], outcome.evidence, _today(app)
    )
    state.audit_cards = shown.audited
    state.quieted = [card["source"]["topic"]["code"] for card, _entry in shown.quieted]
    state.cards = [
        (card["uuid"], card["source"]["topic"]["code"], card["indicator"]) for card in shown.cards
    ]
    return json_response({**outcome.response, "cards": shown.cards})


def _today(app: Flask | None = None):
    return today((app or current_app).config["CDS_SETTINGS"])


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    service = find_service(service_id)
    g.service_id = service.id
    items = parse_feedback(read_json())
    stored = current_app.extensions["cds_feedback"].add(service.id, items)
    # Issue 16: already-addressed / patient-declined quiet the card's rule for its patient.
    current_app.extensions["cds_quiet"].on_feedback(items, _today(), _security().audit.write_queued)
    metrics.feedback(items)
    return json_response({"received": len(items), "stored": stored})


def check_fhir_server(url: str) -> str:
    """The request's `fhirServer` in the one strict reading that both the FHIR-server policy
    and the HTTP client use; a URL it refuses is a 400 naming `fhirServer`, whatever the
    prefetch (a client that sends such a URL would be sent nothing anyway)."""
    try:
        return str(parse_http_url(url))
    except BadUrl as problem:
        raise InvalidRequest(
            f"fhirServer {problem}: send the FHIR server's base URL as http(s)://host[:port]/path "
            "with the host in normal form",
            "fhirServer",
        ) from None


def _security() -> Security:
    return current_app.extensions["cds_security"]


@bp.before_app_request
def _authenticate():
    """Every endpoint but /health (and CORS preflight) needs a valid client JWT."""
    state, req = g._get_current_object(), request._get_current_object()  # looked up once
    state.started = time.monotonic()
    security = _security()
    path = req.path
    if not security.enabled or req.method == "OPTIONS" or path in PUBLIC_PATHS:
        return None
    if path == "/cds-services" and security.trust.anonymous_discovery:
        return None
    console = path == "/console" or path.startswith("/console/")
    if console and current_app.config.get("CDS_CONSOLE_SIGN_IN"):
        return None  # the console's own sign-in guards it (console/signin.py)
    try:
        state.caller = security.authenticator.verify(
            req.headers.get("Authorization"),
            audience_url(security.public_base_url, path),
        )
    except Unauthorized as refusal:
        state.auth_failure = str(refusal)  # for the log; the caller learns nothing
        metrics.auth_failure(state.auth_failure)
        state.reason = "unauthorized"
        issue = Issue("Unauthorized", None, "login")
        response = json_response(operation_outcome([issue]), 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return None


@bp.after_app_request
def _no_host_in_location(response: Response) -> Response:
    """Werkzeug builds its redirects (`/console` -> `/console/`) from the request's `Host`
    header, which the client chooses. A Location is made relative here, or absolute on
    CDS_PUBLIC_BASE_URL when the operator set it: never on the client's Host."""
    location = response_header(response, "location")
    if location and not g.get("external_location"):  # e.g. the console's OpenID provider
        parts = urlsplit(location)
        if parts.scheme or parts.netloc:
            relative = urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))
            base = _security().public_base_url
            response.headers["Location"] = (base.rstrip("/") + relative) if base else relative
    return response


@bp.after_app_request
def _access_log(response: Response) -> Response:
    # Ids, timings, rule ids and a keyed hash of the patient id only: never tokens, resource
    # contents or note text. Built once, from the request globals looked up once (each `g.x`
    # goes through a context-local proxy) and read as the dict they are: a name a request did
    # not set (the caller under --no-auth, auth_failure, console_user) is a dict miss, where
    # getattr's default costs a raised and caught AttributeError (1 us each).
    here, req = vars(g._get_current_object()), request._get_current_object()
    started = here.get("started")
    record = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": "request",
        "method": req.method,
        "path": req.path,
        "status": response.status_code,
        "ms": round((time.monotonic() - started) * 1000, 1) if started is not None else 0.0,
    }
    caller = here.get("caller")
    if caller is not None:
        record["issuer"] = caller.issuer.iss
        if caller.tenant:
            record["tenant"] = caller.tenant
    for key in _LOGGED:
        value = here.get(key)
        if value:
            record[key] = value
    if 400 <= response.status_code < 500:
        record["reason"] = here.get("reason") or _REASONS.get(response.status_code, "client-error")
        record["expression"] = _expressions(response)
    if record.get("service_id"):
        record["hook"] = find_service(record["service_id"]).hook
    if log.isEnabledFor(logging.INFO):
        _info(json.dumps(record))
    if (
        record["method"] == "POST"
        and record.get("service_id")
        and not record["path"].endswith("/feedback")
    ):
        try:
            cards = here.get("audit_cards") or here.get("cards") or []
            _security().audit.record(record, cards)
        except Exception as exc:  # the answer is already made: log, never fail it
            metrics.store_error("audit")
            log.error(json.dumps({"event": "audit_failed", "error": type(exc).__name__}))
    return response


def _info(line: str) -> None:
    """`log.info(line)` without the logging module's walk up the stack for the caller's file,
    line and function (findCaller), which no format of the service shows: a third of the
    access line's cost under gevent. The line is still a record through the configured
    handlers and filters, so an operator's logging set-up (and pytest's caplog) sees it."""
    record = log.makeRecord(
        log.name, logging.INFO, "(unknown file)", 0, line, (), None, "(unknown function)"
    )
    log.handle(record)


_LOGGED = (
    "service_id",
    "hook_instance",
    "patient",
    "rule_ids",
    "quieted",
    "fetched",
    "tolerated",
    "auth_failure",
    "console_user",
)


# The access log's short reason for a 4xx whose handler set none.
_REASONS = {
    400: "invalid",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    412: "data-unavailable",
    413: "too-large",
    415: "unsupported-media-type",
}


def _expressions(response: Response) -> list[str]:
    """The field paths an OperationOutcome answer names (paths, never values; each cut short:
    a path may hold a field name the client chose)."""
    if response.mimetype != "application/json" or response.is_streamed:
        return []
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return []
    issues = body.get("issue") if isinstance(body, dict) else None
    paths = [
        str(expression)[:200]
        for issue in (issues if isinstance(issues, list) else [])
        if isinstance(issue, dict)
        for expression in issue.get("expression") or []
    ]
    return paths[:20]


@bp.app_errorhandler(CdsError)
def _cds_error(error: CdsError):
    g.reason = error.reason
    response = json_response(error.operation_outcome(), error.status)
    if isinstance(error, StoreUnavailable):
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response


@bp.app_errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge):
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    g.reason = "too-large"
    issue = Issue(
        f"The request body is larger than the limit of {limit} bytes", "body", "too-costly"
    )
    return json_response(operation_outcome([issue]), 413)


@bp.app_errorhandler(HTTPException)
def _http_error(error: HTTPException):
    code = {404: "not-found", 405: "not-supported"}.get(error.code or 500, "invalid")
    issue = Issue(f"{error.name}: {request.method} {request.path}", None, code)
    response = json_response(operation_outcome([issue]), error.code or 500)
    if error.code == 405 and getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


@bp.app_errorhandler(Exception)
def _unexpected(error: Exception):
    # Our defect. The client gets no stack trace; the log gets the type and where, no values.
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    log.error(json.dumps({"event": "error", "type": type(error).__name__, "where": where}))
    issue = Issue("The service failed to process this request", None, "exception")
    return json_response(operation_outcome([issue]), 500)
