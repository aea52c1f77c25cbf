"""The review console behind OpenID Connect sign-in (authentication on, CDS_CONSOLE_OIDC_*).

Flow: a console page without a session redirects to `/console/login`, which sends the browser
to the provider's authorization endpoint (Authlib: authorization code flow with PKCE S256,
`state` and `nonce` kept in the server-side session). The provider sends it back to
`/console/callback` (CDS_PUBLIC_BASE_URL + `/console/callback`, the redirect URI to register),
where Authlib exchanges the code and validates the ID token against the provider's discovery
document and JWKS (signature, `iss`, `aud`, `exp`, `nonce`). The configured claim (from the ID
token, else from the userinfo endpoint) must hold one of the allowed values: then the session
gets a new id, the user and a CSRF token; otherwise it is deleted and the answer is a 403 page.

Signed in, the console runs examples and sends feedback through `/console/api/cds-services/…`,
which call the same in-process handlers as `/cds-services/…` (same engine, audit trail,
feedback store and analytics) without a client JWT: no signing key to manage, and nothing the
browser holds works outside the console. Those runs may not reach a FHIR server (prefetch
only): a signed-in reviewer is not an EHR with a FHIR server the trust configuration lists.

Every /console URL needs the session, except the sign-in steps (`login`, `callback`,
`signed-out`) and the static files (the package's own CSS and JavaScript, the same for
everyone). Pages redirect to sign-in; everything else answers 401. Every request that is not
GET/HEAD/OPTIONS must carry the session's CSRF token (header `X-CSRF-Token` from the page's
`<meta name="csrf-token">`, or form field `csrf_token`), else 403. Sign-out (a POST form)
deletes the session and, when the provider has an `end_session_endpoint`, ends the provider's
session too (RP-initiated logout), returning to `/console/signed-out`.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from .. import api
from ..api import json_response
from ..errors import Issue, operation_outcome
from ..settings import ConsoleOidc, Settings
from .sessions import CookiePolicy, ServerSessionInterface, SqliteSessionStore

log = logging.getLogger("cds_service")
bp = Blueprint("console_signin", __name__, url_prefix="/console")

OPEN_ENDPOINTS = frozenset(
    {
        "console.static",
        "console_signin.login",
        "console_signin.callback",
        "console_signin.signed_out",
    }
)
# GET pages a browser opens: without a session they redirect to sign-in (the rest answer 401).
PAGE_ENDPOINTS = frozenset(
    {"console.index", "console.rules", "console.analytics_page", "console.analytics_csv"}
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
HTTP_TIMEOUT_S = 10


class SignInUnavailable(Exception):
    """The provider cannot be used now (unreachable, or its discovery document is wrong)."""


class SignIn:
    """The OIDC client (Authlib) and what the routes need to know about the configuration."""

    def __init__(self, app: Flask, config: ConsoleOidc, public_base_url: str):
        self.config = config
        self.base_url = public_base_url.rstrip("/")
        self.redirect_uri = f"{self.base_url}/console/callback"
        self.signed_out_uri = f"{self.base_url}/console/signed-out"
        client_kwargs: dict = {
            "scope": config.scope,
            "code_challenge_method": "S256",
            "default_timeout": HTTP_TIMEOUT_S,
        }
        if config.client_secret is None:
            client_kwargs["token_endpoint_auth_method"] = "none"  # noqa: S105 - a method name
        self.client = OAuth(app).register(
            "console",
            client_id=config.client_id,
            client_secret=config.client_secret,
            server_metadata_url=config.issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_kwargs=client_kwargs,
        )

    def metadata(self) -> dict:
        """The provider's discovery document (fetched once per process), checked to be the
        configured issuer's (OpenID Connect Discovery 4.3)."""
        try:
            metadata = self.client.load_server_metadata()
        except (requests.RequestException, ValueError) as exc:
            self.client.server_metadata.pop("_loaded_at", None)
            raise SignInUnavailable(f"discovery document: {type(exc).__name__}") from None
        if metadata.get("issuer") != self.config.issuer:
            self.client.server_metadata.clear()
            raise SignInUnavailable("the discovery document names another issuer")
        return metadata

    def form_action_origins(self) -> list[str]:
        """Origins the sign-out form may end on (CSP form-action follows redirects)."""
        origins = {_origin(self.config.issuer)}
        end = self.client.server_metadata.get("end_session_endpoint")
        if isinstance(end, str):
            origins.add(_origin(end))
        return sorted(o for o in origins if o)

    def granted(self, claims: dict) -> bool:
        values = claims.get(self.config.claim)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            return False
        return any(isinstance(v, str) and v in self.config.allowed for v in values)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def install(app: Flask, settings: Settings) -> None:
    """Put the console behind sign-in: server-side sessions, the guard, the sign-in routes."""
    config = settings.console_oidc
    assert config is not None and settings.public_base_url
    app.session_interface = ServerSessionInterface(
        SqliteSessionStore(settings.data_dir / "console-sessions.sqlite3"),
        config.session_secret,
        CookiePolicy.for_base_url(settings.public_base_url),
        config.session_idle_s,
        config.session_max_s,
    )
    app.extensions["cds_console_signin"] = SignIn(app, config, settings.public_base_url)
    app.config["CDS_CONSOLE_SIGN_IN"] = True  # api._authenticate leaves /console to the guard
    app.before_request(_guard)
    app.register_blueprint(bp)


def signin() -> SignIn:
    return current_app.extensions["cds_console_signin"]


def _is_console(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def _guard() -> Response | None:
    """Every /console request but the open ones needs a signed-in session (and, to change
    anything, its CSRF token)."""
    if not _is_console(request.path) or request.endpoint in OPEN_ENDPOINTS:
        return None
    user = session.get("user")
    if not isinstance(user, dict):
        if request.endpoint == "console_signin.logout":
            return redirect(url_for("console_signin.signed_out"), 303)
        page = request.endpoint in PAGE_ENDPOINTS or request.path == "/console"
        if request.method in ("GET", "HEAD") and page:
            return redirect(url_for("console_signin.login", next=request.full_path.rstrip("?")))
        g.reason = "unauthorized"
        return _refusal("Sign in to the console first (/console/login)", "login", 401)
    if request.method not in SAFE_METHODS and not _csrf_ok():
        g.reason = "csrf"
        return _refusal(
            "The console's CSRF token is missing or wrong: reload the page", "forbidden", 403
        )
    g.console_user = user.get("sub")
    return None


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype == "application/x-www-form-urlencoded":
        sent = request.form.get(CSRF_FIELD)
    return (
        isinstance(expected, str)
        and isinstance(sent, str)
        and hmac.compare_digest(sent.encode(), expected.encode())
    )


def _refusal(message: str, code: str, status: int) -> Response:
    return json_response(operation_outcome([Issue(message, None, code)]), status)


def _event(event: str, **fields: object) -> None:
    # Ids and reasons only: never a token, a code or a claim's values.
    log.info(json.dumps({"event": event, **fields}))


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path on this service, never elsewhere."""
    if (
        isinstance(target, str)
        and _is_console(target.split("?", 1)[0])
        and "\\" not in target
        and not any(ord(c) < 0x21 for c in target)
    ):
        return target
    return url_for("console.index")


def _page(template: str, status: int, **context: object) -> tuple[str, int]:
    return render_template(f"console/{template}", bare=True, **context), status


# ------------------------------------------------------------------------------ sign-in


@bp.get("/login")
def login():
    if isinstance(session.get("user"), dict):
        return redirect(_safe_next(request.args.get("next")))
    try:
        signin().metadata()
        session["next"] = _safe_next(request.args.get("next"))
        options = {"prompt": "login"} if request.args.get("switch") else {}
        response = signin().client.authorize_redirect(signin().redirect_uri, **options)
    except (SignInUnavailable, requests.RequestException) as exc:
        _event("console_sign_in_unavailable", reason=str(exc)[:200])
        return _page("signin.html", 503, state="unavailable")
    g.external_location = True  # the provider's URL: api._no_host_in_location leaves it be
    return response


@bp.get("/callback")
def callback():
    if isinstance(session.get("user"), dict):  # signed in already (e.g. the Back button)
        return redirect(url_for("console.index"))
    client = signin().client
    try:
        signin().metadata()
        if request.args.get("iss") not in (None, signin().config.issuer):  # RFC 9207
            raise OAuthError(error="wrong_issuer")
        token = client.authorize_access_token()
        claims = dict(token.get("userinfo") or {})
        if not claims.get("sub"):
            raise OAuthError(error="no_id_token")
        if signin().config.claim not in claims and signin().metadata().get("userinfo_endpoint"):
            info = client.userinfo(token=token)
            if info.get("sub") == claims["sub"]:  # OIDC Core 5.3.2
                claims.update({k: v for k, v in info.items() if k not in claims})
    except SignInUnavailable as exc:
        _event("console_sign_in_unavailable", reason=str(exc)[:200])
        return _page("signin.html", 503, state="unavailable")
    except OAuthError as exc:
        # e.g. access_denied (the user cancelled), mismatching_state (an old or forged link)
        _event("console_sign_in_failed", reason=str(exc.error)[:64])
        session.end()
        return _page("signin.html", 400, state="failed")
    except requests.RequestException as exc:
        _event("console_sign_in_failed", reason=type(exc).__name__)
        return _page("signin.html", 503, state="unavailable")
    except Exception as exc:  # an ID token that fails validation (joserfc / authlib errors)
        _event("console_sign_in_failed", reason=type(exc).__name__)
        session.end()
        return _page("signin.html", 400, state="failed")
    target = _safe_next(session.get("next"))
    session.clear()
    name = str(claims.get("name") or claims.get("preferred_username") or claims["sub"])[:200]
    if not signin().granted(claims):
        _event("console_sign_in_refused", sub=str(claims["sub"])[:200])
        session.end()
        return _page("signin.html", 403, state="refused", name=name)
    session.renew()
    session["user"] = {"sub": str(claims["sub"]), "name": name}
    session["csrf"] = secrets.token_urlsafe(32)
    session["id_token"] = token.get("id_token")
    _event("console_sign_in", sub=str(claims["sub"])[:200])
    return redirect(target)


@bp.post("/logout")
def logout():
    id_token = session.get("id_token")
    _event("console_sign_out", sub=str(session["user"].get("sub"))[:200])
    session.end()
    try:
        end_session = signin().metadata().get("end_session_endpoint")
    except SignInUnavailable:
        end_session = None
    if not isinstance(end_session, str):
        return redirect(url_for("console_signin.signed_out"), 303)
    url = signin().client.create_logout_url(
        post_logout_redirect_uri=signin().signed_out_uri,
        id_token_hint=id_token,
        client_id=signin().config.client_id,
    )["url"]
    g.external_location = True
    return redirect(url, 303)


@bp.get("/signed-out")
def signed_out():
    return _page("signin.html", 200, state="signed-out")


# ------------------------------------------------------------- the engine, in process


@bp.post("/api/cds-services/<service_id>")
def run_service(service_id: str):
    """POST /cds-services/{id}, for a signed-in reviewer (no client JWT, no FHIR server)."""
    return api.invoke(service_id)


@bp.post("/api/cds-services/<service_id>/feedback")
def send_feedback(service_id: str):
    """POST /cds-services/{id}/feedback, for a signed-in reviewer: the same feedback store."""
    return api.feedback(service_id)
