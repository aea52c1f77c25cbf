"""The application factory."""

from __future__ import annotations

import atexit
import logging

from flask import Flask, Response, request
from flask_cors import CORS

from . import console, metrics
from .api import Security, bp, response_header
from .audit import PatientHasher
from .auth import Authenticator, KeySource
from .engine import Engine
from .errors import ConfigurationError
from .quiet import PatientIndex, Quieting
from .settings import Settings
from .stores import Stores, open_stores
from .trust import TrustConfig, load_trust

log = logging.getLogger("cds_service")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["CDS_SETTINGS"] = settings
    engine = Engine(settings)
    atexit.register(engine.close)
    app.extensions["cds_engine"] = engine
    stores = open_stores(settings, replay=settings.auth_enabled)
    atexit.register(stores.close)
    app.extensions["cds_stores"] = stores
    app.extensions["cds_feedback"] = stores.feedback
    app.extensions["cds_security"] = _security(settings, stores)
    app.extensions["cds_quiet"] = Quieting(
        stores.quiet, app.extensions["cds_security"].hasher, PatientIndex(stores.quiet)
    )
    # Browser clients (the public CDS Hooks sandbox) call from another origin with a bearer
    # token; no cookies are used, so credentials stay off. Only the CDS Hooks endpoints are
    # shared: the console and /openapi.json are for same-origin use.
    CORS(
        app,
        resources={r"/cds-services": {}, r"/cds-services/*": {}},
        origins=settings.allowed_origins,
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )
    _remember_cors_without_origin(app)
    metrics.init_app(app, settings)  # before the API: a scrape needs no client JWT
    app.register_blueprint(bp)
    console.init_app(app, settings)  # /console, when the settings turn it on
    return app


# Paths whose CORS headers for a request without Origin are remembered (client-chosen paths:
# bounded; beyond it flask-cors works them out per request, as before).
_CORS_MEMO_PATHS = 256


def _remember_cors_without_origin(app: Flask) -> None:
    """flask-cors works out the headers of every answer afresh (resource patterns, options,
    its debug logging): 40 us of the hook call's 450 in process. For a request without Origin
    (an EHR calling server to server: the common case), not a preflight, and without the
    private-network request header, what it adds depends on the path alone: it is asked once
    per path, on a blank response in the same request, and the headers it added are added
    again to later answers on that path. Every other request goes through flask-cors itself."""
    funcs = app.after_request_funcs[None]
    # flask-cors's own after-request function, replaced in place (the hooks keep their order).
    # Should a flask-cors release register it otherwise, this fails at start-up, not silently.
    (index,) = [i for i, f in enumerate(funcs) if f.__name__ == "cors_after_request"]
    cors_after_request = funcs[index]
    memo: dict[str, list[tuple[str, str]]] = {}

    def cors_after_request_remembered(response: Response) -> Response:
        req = request._get_current_object()
        environ = req.environ  # the headers as flask-cors reads them, without Headers objects
        if (
            "HTTP_ORIGIN" in environ
            or "HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK" in environ
            or req.method == "OPTIONS"
        ):
            return cors_after_request(response)
        # As flask-cors: an answer that has the header already keeps it.
        if response_header(response, "access-control-allow-origin"):
            return response
        path = req.path
        added = memo.get(path)
        if added is None:
            probe = Response()
            before = len(probe.headers)
            cors_after_request(probe)
            added = list(probe.headers.items())[before:]
            if len(memo) < _CORS_MEMO_PATHS:
                memo[path] = added
        for name, value in added:
            response.headers.add(name, value)
        return response

    funcs[index] = cors_after_request_remembered


def check_configuration(settings: Settings) -> TrustConfig:
    """The trust configuration, or ConfigurationError saying what the operator must set."""
    trust = load_trust(settings.trust_config)
    if settings.auth_enabled:
        if not trust.issuers:
            raise ConfigurationError(
                "authentication is on but no issuer is trusted: set CDS_TRUST_CONFIG "
                "(or run with --no-auth for local development)"
            )
        if not settings.public_base_url:
            raise ConfigurationError(
                "authentication is on: set CDS_PUBLIC_BASE_URL, the URL clients call "
                "(tokens' aud is checked against it)"
            )
    if settings.database_url and not settings.log_hash_key:
        raise ConfigurationError(
            "CDS_DATABASE_URL is set: set CDS_LOG_HASH_KEY too, the same secret on every "
            "instance (the shared audit trail, analytics and quieting know a patient by its "
            "keyed hash; a key made per machine would split one patient into several)"
        )
    return trust


def _security(settings: Settings, stores: Stores) -> Security:
    trust = check_configuration(settings)
    authenticator = None
    if settings.auth_enabled:
        authenticator = Authenticator(
            trust,
            KeySource(trust, settings.jwks_ttl_s, settings.jwks_min_refresh_s),
            stores.replay,
            settings.jwt_leeway_s,
            settings.jwt_max_lifetime_s,
        )
    return Security(
        enabled=settings.auth_enabled,
        trust=trust,
        authenticator=authenticator,
        public_base_url=settings.public_base_url,
        hasher=PatientHasher(settings.log_hash_key, settings.data_dir),
        audit=stores.audit,
    )
