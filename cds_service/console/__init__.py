"""The review console: a web page, served by the service itself, for clinical informaticists.

`/console` runs any example (or a pasted or uploaded hook request or patient Bundle) through
the service's own CDS endpoint from the browser and shows the cards as an EHR would; accepting
a suggestion or overriding a card sends real CDS Hooks feedback. `/console/analytics` counts,
per rule, the cards shown, accepted and overridden; `/console/rules` lists every rule with the
concept groups and sources it runs on.

Server-rendered (Jinja) with a little plain JavaScript and CSS shipped in the package: no CDN,
no build step. Pages carry a strict Content-Security-Policy (scripts and styles from the
service only). The console is on only when the settings say so (`Settings.console_active`);
when off, its routes do not exist. With authentication on it is served behind OpenID Connect
sign-in (signin.py) when CDS_CONSOLE_OIDC_* configure it, and off otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, date, datetime, timedelta

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    render_template,
    request,
    session,
    url_for,
)

from .. import __version__, analytics, cards, quiet
from ..api import json_response, read_json
from ..errors import InvalidRequest
from ..rules import RULE_IDS
from ..services import SERVICES, Service, find_service
from ..settings import Settings
from . import catalog, examples
from .markdown import render as render_markdown
from .markdown import safe_url

log = logging.getLogger("cds_service")
bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
DEFAULT_DAYS = 30
INDICATORS = ("critical", "warning", "info")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def init_app(app: Flask, settings: Settings) -> None:
    """Serve the console if the settings turn it on: with auth off, or with auth on behind
    OpenID Connect sign-in when it is configured."""
    if not settings.console_active:
        if settings.auth_enabled and settings.console_enabled is None:
            _note(
                "console_off",
                "authentication is on and console sign-in is not configured "
                "(CDS_CONSOLE_OIDC_ISSUER and the rest, see README Review console): "
                "the review console is off",
            )
        return
    app.register_blueprint(bp)
    if settings.console_sign_in:
        from . import signin

        signin.install(app, settings)
    elif settings.auth_enabled:
        _note(
            "console_with_auth",
            "CDS_CONSOLE=on with authentication on and no console sign-in: the console's "
            "pages and calls need a client JWT like every other endpoint",
        )
    elif settings.console_oidc is not None:
        _note("console_open", "--no-auth: the console is open; its sign-in settings are unused")


def _note(event: str, note: str) -> None:
    log.warning(json.dumps({"event": event, "note": note}))


def _sign_in_on() -> bool:
    return bool(current_app.config.get("CDS_CONSOLE_SIGN_IN"))


@bp.app_context_processor
def _signed_in_user() -> dict:
    """The signed-in user and the session's CSRF token for the pages (none without sign-in)."""
    if not (_sign_in_on() and request.path.startswith("/console")):
        return {"console_user": None, "csrf_token": None}
    user = session.get("user")
    return {
        "console_user": user if isinstance(user, dict) else None,
        "csrf_token": session.get("csrf"),
    }


@bp.after_app_request
def _headers(response: Response) -> Response:
    if not (request.path == "/console" or request.path.startswith("/console/")):
        return response
    policy = CSP
    if _sign_in_on():  # the sign-out form ends on the provider's end-session endpoint
        extra = current_app.extensions["cds_console_signin"].form_action_origins()
        policy = CSP.replace("form-action 'self'", " ".join(["form-action 'self'", *extra]))
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


bp.add_app_template_filter(render_markdown, "markdown")
bp.add_app_template_global(safe_url, "safe_url")


@bp.app_template_global()
def console_static(filename: str) -> str:
    return url_for("console.static", filename=filename, v=__version__)


def _settings() -> Settings:
    return current_app.config["CDS_SETTINGS"]


# ---------------------------------------------------------------------------------- review


@bp.get("/")
def index():
    found = examples.examples()
    groups = [
        (label, [e for e in found.values() if e.group == group]) for group, label in examples.GROUPS
    ]
    settings = _settings()
    return render_template(
        "console/index.html",
        page="review",
        services=SERVICES,
        groups=[(label, items) for label, items in groups if items],
        examples_root=examples.examples_root(),
        fixed_now=settings.fixed_now.isoformat() if settings.fixed_now else None,
        # Signed in, the page calls the engine through the console (session and CSRF token);
        # otherwise the CDS Hooks endpoints themselves, as an EHR does.
        services_url=(
            url_for("console.index") + "api/cds-services/"
            if _sign_in_on()
            else url_for("cds.discovery") + "/"
        ),
    )


@bp.get("/examples/<group>/<name>")
def example(group: str, name: str):
    found = examples.examples().get(f"{group}/{name}")
    if found is None:
        raise InvalidRequest(f"No example '{group}/{name}'", "example")
    fixed = _settings().fixed_now
    note = None
    if found.now and (fixed is None or fixed.isoformat() != _iso(found.now)):
        note = (
            f"This example is dated for {found.now}; the service evaluates as of "
            f"{fixed.isoformat() if fixed else 'the current time'}, so its cards may differ "
            f"from the expected ones. Start the service with CDS_FIXED_NOW={found.now} to see "
            "them as the tests do."
        )
    return json_response(
        {
            "key": found.key,
            "request": found.request(),
            "expected": {
                "description": found.description,
                "service": found.service,
                "now": found.now,
                "rule_ids": list(found.rule_ids),
            },
            "clockNote": note,
        }
    )


def _service_body() -> tuple[dict, Service]:
    """The console's JSON body (an object) and the service it names."""
    body = read_json()
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object", "body")
    return body, find_service(str(body.get("service")))


@bp.post("/wrap")
def wrap():
    """A hook request for the chosen service made from a patient Bundle."""
    body, service = _service_body()
    try:
        return json_response(examples.request_from_bundle(body.get("bundle"), service))
    except examples.NotAPatientBundle as problem:
        raise InvalidRequest(str(problem), "bundle") from None


@bp.post("/render")
def render_cards():
    """The cards of a CDS response (or the issues of an OperationOutcome) as HTML."""
    body, service = _service_body()
    answer = body.get("response")
    status = body.get("status") if isinstance(body.get("status"), int) else 200
    expected = body.get("expected")
    cards = answer.get("cards") if isinstance(answer, dict) else None
    issues = None
    if isinstance(answer, dict) and answer.get("resourceType") == "OperationOutcome":
        issues = [_issue(i) for i in _dicts(answer.get("issue"))]
    elif not isinstance(cards, list):
        issues = [{"diagnostics": "The service's answer holds no cards list"}]
    shown = [_card(c) for c in _dicts(cards)]
    fired = [_topic(c) for c in shown]
    comparison = None
    if isinstance(expected, list) and issues is None:
        wanted = [str(r) for r in expected]
        comparison = {
            "matches": fired == wanted,
            "missing": [r for r in wanted if r not in fired],
            "extra": [r for r in fired if r not in wanted],
            "expected": wanted,
        }
    return render_template(
        "console/cards.html",
        service=service,
        cards=shown,
        status=status,
        issues=issues,
        comparison=comparison,
        topic=_topic,
        quieted=_quieted(body.get("patientId")),
        reason_label=_quiet_reason_label,
    )


def _quieted(patient_id: object) -> list:
    """The patient's cards quieted by feedback, running today (issue 16)."""
    quieting = current_app.extensions.get("cds_quiet")
    if quieting is None or not isinstance(patient_id, str) or not patient_id:
        return []
    patient_hash = current_app.extensions["cds_security"].hasher(patient_id)
    return quieting.listed(patient_hash, quiet.today(_settings()))


def _quiet_reason_label(code: str) -> str:
    system = cards.content().common["override_reason_system"]
    return catalog.reason_displays().get((system, code), code)


@bp.post("/quiet/<int:entry_id>/lift")
def lift_quiet(entry_id: int):
    """An operator lifts a quiet entry: the card shows again from the next call."""
    quieting = current_app.extensions.get("cds_quiet")
    if quieting is None:
        raise InvalidRequest("Quieting is not configured", "entry")
    by = g.get("console_user") or "console"  # the signed-in user's subject, when signed in
    lifted = quieting.lift(entry_id, by)
    log.info(json.dumps({"event": "quiet_lifted", "entry": entry_id, "signed_in": by != "console"}))
    return json_response({"lifted": lifted})


def _dicts(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _card(card: dict) -> dict:
    """The card with every field the page walks in the shape the template expects (the answer
    comes from the browser, so it may be anything): what has another shape is left out."""
    shown = dict(card)
    shown["detail"] = card["detail"] if isinstance(card.get("detail"), str) else None
    shown["source"] = card["source"] if isinstance(card.get("source"), dict) else None
    shown["suggestions"] = [
        {**s, "actions": _dicts(s.get("actions"))} for s in _dicts(card.get("suggestions"))
    ]
    shown["links"] = _dicts(card.get("links"))
    shown["overrideReasons"] = _dicts(card.get("overrideReasons"))
    return shown


def _issue(issue: dict) -> dict:
    expression = issue.get("expression")
    if isinstance(expression, list):
        expression = ", ".join(str(e) for e in expression)
    text = {k: v for k, v in issue.items() if k in {"diagnostics", "code"} and isinstance(v, str)}
    return {**text, "expression": expression if isinstance(expression, str) else None}


def _topic(card: dict) -> str:
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    return str(topic.get("code", ""))


def _iso(text: str) -> str:
    from .. import fhirdates

    moment = fhirdates.parse(text)
    return moment.isoformat() if moment else text


# ---------------------------------------------------------------------------------- rules


@bp.get("/rules")
def rules():
    return render_template("console/rules.html", page="rules", catalog=catalog.catalog())


# ---------------------------------------------------------------------------------- analytics


def _period() -> tuple[analytics.Period, str | None]:
    """The period asked for (default: the last 30 days), and what was wrong with the ask."""
    today = datetime.now(UTC).date()
    default = analytics.Period(today - timedelta(days=DEFAULT_DAYS - 1), today)
    try:
        start = date.fromisoformat(request.args.get("from") or default.start.isoformat())
        end = date.fromisoformat(request.args.get("to") or default.end.isoformat())
        return analytics.Period(start, end), None
    except ValueError:
        return default, (
            "The period must be two dates (YYYY-MM-DD), the first not after the second; "
            f"showing the last {DEFAULT_DAYS} days instead."
        )


def _activity(period: analytics.Period) -> list[analytics.RuleActivity]:
    stores = current_app.extensions["cds_stores"]
    stores.audit.flush()  # this process's queued rows
    return stores.analytics.rule_activity(period, RULE_IDS)


def _reason_label(reason: tuple[str | None, str | None], displays: dict) -> str:
    system, code = reason
    if code is None:
        return "(no reason given)"
    return displays.get((system, code)) or code


@bp.get("/analytics")
def analytics_page():
    period, problem = _period()
    rows = _activity(period)
    displays = catalog.reason_displays()
    top = max([max(r.fired, r.accepted, r.overridden) for r in rows] + [1])
    return render_template(
        "console/analytics.html",
        page="analytics",
        period=period,
        problem=problem,
        rows=rows,
        top=top,
        reason_label=lambda reason: _reason_label(reason, displays),
        unknown=analytics.UNKNOWN_CARD,
        indicators=INDICATORS,
    ), (400 if problem else 200)


@bp.get("/analytics.csv")
def analytics_csv():
    period, problem = _period()
    if problem:
        raise InvalidRequest(problem, "from")
    rows = _activity(period)
    displays = catalog.reason_displays()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "rule_id",
            "fired",
            *(f"fired_{i}" for i in INDICATORS),
            "accepted",
            "overridden",
            "override_reasons",
            "quieted",
            "from",
            "to",
        ]
    )
    for row in rows:
        reasons = "; ".join(
            f"{_reason_label(reason, displays)} ({reason[1] or '-'}): {count}"
            for reason, count in sorted(row.reasons.items(), key=lambda kv: -kv[1])
        )
        writer.writerow(
            [
                _cell(row.rule_id or "(card not in the audit trail)"),
                row.fired,
                *(row.indicators.get(i, 0) for i in INDICATORS),
                row.accepted,
                row.overridden,
                _cell(reasons),
                row.quieted,
                period.start.isoformat(),
                period.end.isoformat(),
            ]
        )
    name = f"cds-feedback-analytics-{period.start.isoformat()}-{period.end.isoformat()}.csv"
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _cell(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (reason codes come from clients)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
