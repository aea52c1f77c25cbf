"""The review console behind OpenID Connect sign-in, with authentication ON.

A real OpenID Provider (panva/oidc-provider, tests/oidc/provider.mjs, installed with `npm ci`
into tests/oidc/node_modules when missing) runs on 127.0.0.1 with one client (the service's
redirect URI, PKCE required) and two accounts: `reviewer` holds the granted `groups` value,
`bystander` does not. The service runs under gunicorn with a trust configuration (client JWTs
verified) and CDS_CONSOLE_OIDC_* pointing at the provider.

Plain HTTP (requests) for what needs no browser: every console route without a session, the
sign-in redirect and cookie, CSRF, refusal, expiry of sessions (with a clock of the test's own:
waiting is no test). Chromium (Playwright, Debian's package, as test_console_browser.py) for the
whole flow a reviewer goes through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from conftest import EXAMPLE_NOW
from flask import Flask, session
from servers import (
    REDIS_TEST_URL,
    ServiceProcess,
    free_port,
    redis_prefix,
    start_service,
    stop,
    wait_until_up,
)

from cds_service.console.sessions import (
    PENDING_S,
    CookiePolicy,
    ServerSessionInterface,
    SqliteSessionStore,
)
from cds_service.errors import ConfigurationError
from cds_service.settings import Settings, console_oidc_from_env

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "cds-console"
CLIENT_SECRET = f"client-secret-{uuid.uuid4().hex}"
SESSION_SECRET = f"session-secret-{uuid.uuid4().hex}"
GRANTED = "cds-reviewers"
REVIEWER = {
    "id": "reviewer",
    "password": "reviewer-pw",
    "name": "Rita Reviewer",
    "groups": [GRANTED, "staff"],
}
BYSTANDER = {
    "id": "bystander",
    "password": "bystander-pw",
    "name": "Bob Bystander",
    "groups": ["staff"],
}
PV = "cramp-sciatica-patient-view"


# ------------------------------------------------------------------------ the provider


def npm_ci() -> None:
    """tests/oidc/node_modules from the committed lockfile, when missing."""
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the OpenID Provider of tests/oidc/")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=OIDC_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in tests/oidc failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen
    log_path: Path


def start_provider(workdir: Path, service_base: str) -> Provider:
    npm_ci()
    port = free_port()
    config = {
        "port": port,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": f"{service_base}/console/callback",
        "post_logout_redirect_uri": f"{service_base}/console/signed-out",
        "claim": "groups",
        "accounts": [REVIEWER, BYSTANDER],
    }
    log_path = workdir / "provider.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [shutil.which("node") or "node", "provider.mjs"],
        cwd=OIDC_DIR,
        env={**os.environ, "OIDC_TEST_CONFIG": json.dumps(config)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    issuer = f"http://127.0.0.1:{port}"
    wait_until_up(f"{issuer}/.well-known/openid-configuration", process, log_path)
    return Provider(issuer, process, log_path)


@dataclass
class World:
    provider: Provider
    service: ServiceProcess

    @property
    def base(self) -> str:
        return self.service.base_url


def oidc_env(issuer: str, **overrides: str) -> dict[str, str]:
    env = {
        "CDS_CONSOLE_OIDC_ISSUER": issuer,
        "CDS_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
        "CDS_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "CDS_CONSOLE_OIDC_CLAIM": "groups",
        "CDS_CONSOLE_OIDC_ALLOWED": f"some-other-group, {GRANTED}",
        "CDS_CONSOLE_OIDC_SCOPE": "openid profile groups",
        "CDS_CONSOLE_SESSION_SECRET": SESSION_SECRET,
    }
    env.update(overrides)
    return env


def trust_file(workdir: Path) -> Path:
    """Client JWTs are verified (one EHR issuer); the console signs in through OIDC."""
    path = workdir / "trust.json"
    path.write_text(
        json.dumps({"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]})
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("console-oidc")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = start_provider(workdir, base)
    try:
        service = start_service(
            workdir,
            {
                **oidc_env(provider.issuer),
                "CDS_TRUST_CONFIG": str(trust_file(workdir)),
                "CDS_PUBLIC_BASE_URL": base,
                "CDS_FIXED_NOW": EXAMPLE_NOW,
            },
            workers=2,
            auth=True,
            port=port,
        )
    except BaseException:
        stop(provider.process)
        raise
    yield World(provider, service)
    stop(service.process)
    stop(provider.process)


# ------------------------------------------------------------ signing in over plain HTTP


def sign_in(world: World, account: dict, start: str = "/console/login") -> requests.Response:
    """What a browser does: follow the redirects to the provider, fill its login form, follow
    the redirects back. The answer of the last request; its `.session` keeps the cookies."""
    browser = requests.Session()
    page = browser.get(f"{world.base}{start}", timeout=30)
    assert page.url.startswith(f"{world.provider.issuer}/interaction/"), page.url
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    answer = browser.post(
        urljoin(page.url, action),
        data={"username": account["id"], "password": account["password"]},
        timeout=30,
    )
    answer.session = browser
    return answer


def csrf_of(page: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)


PAGES = ["/console/", "/console/rules", "/console/analytics", "/console/analytics.csv"]
CALLS = [
    ("GET", "/console/examples/scenarios/cramps-only"),
    ("POST", "/console/wrap"),
    ("POST", "/console/render"),
    ("POST", f"/console/api/cds-services/{PV}"),
    ("POST", f"/console/api/cds-services/{PV}/feedback"),
    ("GET", "/console/no-such-page"),
    ("POST", "/console/"),
]


def test_without_a_session_pages_redirect_to_sign_in_and_everything_else_is_401(world):
    for path in [*PAGES, "/console"]:
        answer = requests.get(f"{world.base}{path}", allow_redirects=False, timeout=30)
        assert answer.status_code == 302, path
        location = urlsplit(answer.headers["Location"])
        assert location.path == "/console/login", path
        assert parse_qs(location.query)["next"] == [path], path
        assert "Set-Cookie" not in answer.headers  # nothing is stored for a visitor
    for method, path in CALLS:
        answer = requests.request(
            method, f"{world.base}{path}", json={}, allow_redirects=False, timeout=30
        )
        assert answer.status_code == 401, (method, path)
        assert answer.json()["issue"][0]["code"] == "login"
    # The static files are the exception: the package's own CSS and JavaScript, no data.
    assert requests.get(f"{world.base}/console/static/console.css", timeout=30).status_code == 200
    # The CDS Hooks endpoints still want a client JWT: the console opened nothing else.
    assert requests.post(f"{world.base}/cds-services/{PV}", json={}, timeout=30).status_code == 401


def test_sign_in_starts_the_code_flow_with_pkce_state_and_nonce_and_a_session_cookie(world):
    answer = requests.get(f"{world.base}/console/login", allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert (
        f"{location.scheme}://{location.netloc}{location.path}" == f"{world.provider.issuer}/auth"
    )
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{world.base}/console/callback"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20
    assert set(query["scope"].split()) == {"openid", "profile", "groups"}
    cookie = answer.headers["Set-Cookie"]
    # Over http (this test) the cookie is limited to the console; over https it is __Host-.
    assert cookie.startswith("cds-console=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie and "Expires" not in cookie
    session_id = cookie.split(";")[0].split("=", 1)[1]
    # The store holds the session under a keyed hash of its id: a copy of it holds no cookie.
    with sqlite3.connect(world.service.data_dir / "console-sessions.sqlite3") as db:
        store = json.dumps(db.execute("SELECT key, record FROM console_session").fetchall())
    assert session_id not in store and query["nonce"] in store


def test_a_granted_user_signs_in_and_uses_the_console_with_its_csrf_token(world):
    landed = sign_in(world, REVIEWER, "/console/login?next=/console/rules")
    browser = landed.session
    assert landed.status_code == 200 and landed.url == f"{world.base}/console/rules"
    assert "Signed in as <strong>Rita Reviewer</strong>" in landed.text
    token = csrf_of(landed.text)
    for path in PAGES:
        assert browser.get(f"{world.base}{path}", timeout=30).status_code == 200, path
    # An old callback link (the Back button) leaves the session as it is.
    again = browser.get(f"{world.base}/console/callback?code=old&state=old", timeout=30)
    assert again.url == f"{world.base}/console/" and csrf_of(again.text) == token

    example = browser.get(f"{world.base}/console/examples/scenarios/cauda-equina-coded", timeout=30)
    request = {**example.json()["request"], "hookInstance": str(uuid.uuid4())}
    url = f"{world.base}/console/api/cds-services/{PV}"
    # Without the token, or with another, a state-changing call is refused and changes nothing.
    for headers in ({}, {"X-CSRF-Token": "x" * 43}, {"X-CSRF-Token": ""}):
        refused = browser.post(url, json=request, headers=headers, timeout=30)
        assert refused.status_code == 403, headers
        assert refused.json()["issue"][0]["code"] == "forbidden"
    answer = browser.post(url, json=request, headers={"X-CSRF-Token": token}, timeout=30)
    assert answer.status_code == 200, answer.text
    [card] = answer.json()["cards"]
    assert card["source"]["topic"]["code"] == "cauda-equina-red-flag"

    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-20T12:05:00Z",
                "overrideReason": {"reason": card["overrideReasons"][0]},
            }
        ]
    }
    refused = browser.post(f"{url}/feedback", json=feedback, timeout=30)
    assert refused.status_code == 403
    stored = browser.post(
        f"{url}/feedback", json=feedback, headers={"X-CSRF-Token": token}, timeout=30
    )
    assert stored.json() == {"received": 1, "stored": 1}
    # The same CDS Hooks feedback store the EHRs' feedback goes to.
    with sqlite3.connect(world.service.data_dir / "feedback.sqlite3") as db:
        rows = db.execute(
            "SELECT service_id, outcome FROM feedback WHERE card_uuid = ?", (card["uuid"],)
        ).fetchall()
    assert rows == [(PV, "overridden")]
    # The card the console showed is in the audit trail; the log names the reviewer.
    log = world.service.log_text()
    assert '"console_user": "reviewer"' in log and '"event": "console_sign_in"' in log


def test_a_quiet_entry_lifted_in_the_console_names_the_signed_in_user(world):
    landed = sign_in(world, REVIEWER)
    browser, token = landed.session, csrf_of(landed.text)
    headers = {"X-CSRF-Token": token}
    example = browser.get(f"{world.base}/console/examples/scenarios/cramps-only", timeout=30)
    request = {**example.json()["request"], "hookInstance": str(uuid.uuid4())}
    # A patient of its own (another test may quiet the example patient's card): its id
    # everywhere the request names it.
    patient = f"lift-{uuid.uuid4()}"
    text = json.dumps(request).replace('"cramps-only"', f'"{patient}"')
    request = json.loads(text.replace('"Patient/cramps-only"', f'"Patient/{patient}"'))
    url = f"{world.base}/console/api/cds-services/{PV}"
    answer = browser.post(url, json=request, headers=headers, timeout=30)
    [card] = [c for c in answer.json()["cards"] if c["indicator"] == "info"][:1]
    [reason] = [r for r in card["overrideReasons"] if r["code"] == "already-addressed"]
    item = {"card": card["uuid"], "outcome": "overridden", "overrideReason": {"reason": reason}}
    item["outcomeTimestamp"] = "2026-11-20T12:05:00Z"
    sent = browser.post(f"{url}/feedback", json={"feedback": [item]}, headers=headers, timeout=30)
    assert sent.status_code == 200, sent.text
    with sqlite3.connect(world.service.data_dir / "audit.sqlite3") as db:
        [(entry,)] = db.execute("SELECT id FROM quiet WHERE card_uuid = ?", (card["uuid"],))
    lift = f"{world.base}/console/quiet/{entry}/lift"
    assert browser.post(lift, json={}, headers=headers, timeout=30).json() == {"lifted": True}
    with sqlite3.connect(world.service.data_dir / "audit.sqlite3") as db:
        [(by,)] = db.execute("SELECT lifted_by FROM quiet WHERE id = ?", (entry,))
    assert by == "reviewer"  # the user's subject, not "console"


def test_sign_out_needs_the_token_deletes_the_session_and_ends_the_providers(world):
    landed = sign_in(world, REVIEWER)
    browser = landed.session
    token = csrf_of(landed.text)
    cookie = browser.cookies.get("cds-console")
    refused = browser.post(f"{world.base}/console/logout", allow_redirects=False, timeout=30)
    assert refused.status_code == 403
    out = browser.post(
        f"{world.base}/console/logout",
        data={"csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert out.status_code == 303
    end = urlsplit(out.headers["Location"])
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{world.provider.issuer}/session/end"
    query = parse_qs(end.query)
    assert query["post_logout_redirect_uri"] == [f"{world.base}/console/signed-out"]
    assert query["client_id"] == [CLIENT_ID] and "id_token_hint" in query
    assert 'cds-console=""' in out.headers["Set-Cookie"] or "Max-Age=0" in out.headers["Set-Cookie"]
    # The old cookie, replayed, opens nothing: the session is gone from the server.
    replay = requests.get(
        f"{world.base}/console/", cookies={"cds-console": cookie}, allow_redirects=False, timeout=30
    )
    assert replay.status_code == 302 and "/console/login" in replay.headers["Location"]


def test_a_user_without_the_granted_claim_value_is_refused(world):
    refused = sign_in(world, BYSTANDER)
    assert refused.status_code == 403
    assert refused.url.startswith(f"{world.base}/console/callback")
    assert "Access not granted" in refused.text and "Bob Bystander" in refused.text
    assert "csrf-token" not in refused.text
    browser = refused.session
    assert browser.cookies.get("cds-console") is None  # the session was deleted
    for path in PAGES:
        answer = browser.get(f"{world.base}{path}", allow_redirects=False, timeout=30)
        assert answer.status_code == 302, path
    answer = browser.get(f"{world.base}/console/examples/scenarios/cramps-only", timeout=30)
    assert answer.status_code == 401
    assert '"event": "console_sign_in_refused", "sub": "bystander"' in world.service.log_text()


def test_after_sign_in_only_console_paths_are_followed(world):
    for target in ("https://evil.example/", "//evil.example/console/", "/cds-services", "/\\evil"):
        landed = sign_in(world, REVIEWER, f"/console/login?next={requests.utils.quote(target)}")
        assert landed.url == f"{world.base}/console/", target


def test_a_callback_without_a_matching_sign_in_is_refused(world):
    browser = requests.Session()
    for query in ("code=abc&state=forged", "error=access_denied&state=forged", ""):
        answer = browser.get(f"{world.base}/console/callback?{query}", timeout=30)
        assert answer.status_code == 400, query
        assert "Sign-in failed" in answer.text
    assert browser.get(f"{world.base}/console/", allow_redirects=False).status_code == 302


def test_a_forged_or_stale_session_cookie_opens_nothing_and_is_cleared(world):
    for value in ("A" * 43, "not-a-session", "x" * 5000):
        answer = requests.get(
            f"{world.base}/console/rules",
            cookies={"cds-console": value},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302
        assert "Max-Age=0" in answer.headers["Set-Cookie"]


def test_no_token_code_or_secret_reaches_the_log(world):
    landed = sign_in(world, REVIEWER)
    cookie = landed.session.cookies.get("cds-console")
    log = world.service.log_text()
    for secret in (cookie, CLIENT_SECRET, SESSION_SECRET, "eyJ", "code="):
        assert secret not in log


def test_the_console_pages_keep_their_policy_and_let_the_sign_out_form_reach_the_provider(world):
    landed = sign_in(world, REVIEWER)
    policy = landed.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert f"form-action 'self' {world.provider.issuer};" in policy
    assert landed.headers["Cache-Control"] == "no-store"


def test_another_account_can_be_chosen_after_a_refusal(world):
    answer = requests.get(f"{world.base}/console/login?switch=1", allow_redirects=False, timeout=30)
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["prompt"] == ["login"]


@pytest.mark.parametrize("issuer", ["unreachable", "another spelling"])
def test_a_provider_that_cannot_be_used_gives_a_clear_503_page(world, tmp_path, issuer):
    port = free_port()
    provider_port = urlsplit(world.provider.issuer).port
    configured = {
        "unreachable": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        # The discovery document names http://127.0.0.1:port: not the issuer configured.
        "another spelling": f"http://localhost:{provider_port}",
    }[issuer]
    running = start_service(
        tmp_path,
        {
            **oidc_env(configured),
            "CDS_TRUST_CONFIG": str(trust_file(tmp_path)),
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        },
        workers=1,
        auth=True,
        port=port,
    )
    try:
        for path in ("/console/login", "/console/callback?code=x&state=y"):
            answer = requests.get(f"{running.base_url}{path}", allow_redirects=False, timeout=30)
            assert answer.status_code == 503, path
            assert "Sign-in unavailable" in answer.text and "Set-Cookie" not in answer.headers
        assert '"event": "console_sign_in_unavailable"' in running.log_text()
    finally:
        stop(running.process)


# ------------------------------------------------------------------ settings and startup


def test_console_sign_in_settings_name_what_is_missing(tmp_path):
    base = oidc_env("https://id.example.org")
    assert console_oidc_from_env({}) is None
    config = console_oidc_from_env(base)
    assert config.allowed == ("some-other-group", GRANTED)
    assert CLIENT_SECRET not in repr(config) and SESSION_SECRET not in repr(config)
    cases = {
        "CDS_CONSOLE_OIDC_CLIENT_ID": {"CDS_CONSOLE_OIDC_CLIENT_ID": ""},
        "CDS_CONSOLE_OIDC_CLAIM": {"CDS_CONSOLE_OIDC_CLAIM": " "},
        "CDS_CONSOLE_OIDC_ALLOWED": {"CDS_CONSOLE_OIDC_ALLOWED": " , "},
        "CDS_CONSOLE_SESSION_SECRET": {"CDS_CONSOLE_SESSION_SECRET": ""},
        "CDS_CONSOLE_OIDC_ISSUER": {"CDS_CONSOLE_OIDC_ISSUER": "http://id.example.org"},
        "CDS_CONSOLE_OIDC_SCOPE": {"CDS_CONSOLE_OIDC_SCOPE": "profile groups"},
    }
    for name, change in cases.items():
        with pytest.raises(ConfigurationError, match=name):
            console_oidc_from_env({**base, **change})
    # The session secret: 32 characters at least (one less is refused).
    assert console_oidc_from_env({**base, "CDS_CONSOLE_SESSION_SECRET": "s" * 32})
    with pytest.raises(ConfigurationError, match="CDS_CONSOLE_SESSION_SECRET"):
        console_oidc_from_env({**base, "CDS_CONSOLE_SESSION_SECRET": "s" * 31})
    # A setting without the issuer is a mistake, not silently unused.
    with pytest.raises(ConfigurationError, match="CDS_CONSOLE_OIDC_CLIENT_ID is set but"):
        console_oidc_from_env({"CDS_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID})
    # http only on loopback (for tests like these).
    assert console_oidc_from_env({**base, "CDS_CONSOLE_OIDC_ISSUER": "http://127.0.0.1:9"})
    # Secrets from files (Docker/Kubernetes secrets), never both ways at once.
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("from-a-file\n")
    without = {k: v for k, v in base.items() if k != "CDS_CONSOLE_OIDC_CLIENT_SECRET"}
    from_file = {**without, "CDS_CONSOLE_OIDC_CLIENT_SECRET_FILE": str(secret_file)}
    assert console_oidc_from_env(from_file).client_secret == "from-a-file"
    with pytest.raises(ConfigurationError, match="not both"):
        console_oidc_from_env({**base, "CDS_CONSOLE_OIDC_CLIENT_SECRET_FILE": str(secret_file)})
    with pytest.raises(ConfigurationError, match="CDS_CONSOLE_OIDC_CLIENT_SECRET_FILE"):
        console_oidc_from_env({**without, "CDS_CONSOLE_OIDC_CLIENT_SECRET_FILE": "/nonexistent"})
    # A public client (no secret) signs in with PKCE alone.
    assert console_oidc_from_env(without).client_secret is None


def test_where_the_console_is_on():
    oidc = oidc_env("https://id.example.org")
    with_auth = Settings.from_env(oidc, auth_enabled=True)
    assert with_auth.console_active and with_auth.console_sign_in
    without_oidc = Settings.from_env({}, auth_enabled=True)
    assert not without_oidc.console_active and not without_oidc.console_sign_in
    no_auth = Settings.from_env(oidc, auth_enabled=False)  # --no-auth: open, as before
    assert no_auth.console_active and not no_auth.console_sign_in
    off = Settings.from_env({**oidc, "CDS_CONSOLE": "off"}, auth_enabled=True)
    assert not off.console_active and not off.console_sign_in


def test_with_auth_on_and_no_sign_in_the_console_is_off_and_the_log_says_why(tmp_path):
    port = free_port()
    running = start_service(
        tmp_path,
        {
            "CDS_TRUST_CONFIG": str(trust_file(tmp_path)),
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        },
        workers=1,
        auth=True,
        port=port,
    )
    try:
        assert requests.get(f"{running.base_url}/console/", timeout=30).status_code == 401
        assert '"event": "console_off"' in running.log_text()
        assert "CDS_CONSOLE_OIDC_ISSUER" in running.log_text()
    finally:
        stop(running.process)


def test_a_misconfigured_sign_in_stops_the_service_at_start_naming_the_variable(tmp_path):
    from servers import BIN

    env = {
        **os.environ,
        **oidc_env("https://id.example.org", CDS_CONSOLE_SESSION_SECRET="short"),
        "CDS_DATA_DIR": str(tmp_path / "data"),
        "CDS_TRUST_CONFIG": str(trust_file(tmp_path)),
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org",
    }
    result = subprocess.run(
        [str(BIN / "cds-service"), "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CDS_CONSOLE_SESSION_SECRET" in result.stderr and "short" not in result.stderr


# --------------------------------------------------------------- sessions, with a clock


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


IDLE_S, MAX_S = 600.0, 3600.0


@pytest.fixture
def session_app(tmp_path):
    """A Flask app with the console's session interface and a clock the test moves."""
    clock = Clock()
    app = Flask(__name__)
    app.session_interface = ServerSessionInterface(
        SqliteSessionStore(tmp_path / "sessions.sqlite3", clock),
        "k" * 32,
        CookiePolicy.for_base_url("http://127.0.0.1:1"),
        IDLE_S,
        MAX_S,
        clock,
    )

    @app.get("/console/in")
    def sign_in_here():
        session.renew()
        session["user"] = {"sub": "u"}
        return "in"

    @app.get("/console/pending")
    def pending():
        session["next"] = "/console/"
        return "pending"

    @app.get("/console/who")
    def who():
        return session.get("user", {}).get("sub", "nobody")

    return app, clock


def test_a_session_ends_after_its_idle_time_without_a_request(session_app):
    app, clock = session_app
    client = app.test_client()
    client.get("/console/in")
    clock.now += IDLE_S - 1
    assert client.get("/console/who").text == "u"  # just inside: and the request renews it
    clock.now += IDLE_S - 1
    assert client.get("/console/who").text == "u"
    clock.now += IDLE_S + 1
    assert client.get("/console/who").text == "nobody"  # just outside


def test_a_session_ends_at_its_maximum_age_however_busy(session_app):
    app, clock = session_app
    client = app.test_client()
    client.get("/console/in")
    while clock.now + IDLE_S / 2 < 1_000_000.0 + MAX_S - 1:
        clock.now += IDLE_S / 2
        assert client.get("/console/who").text == "u"
    clock.now = 1_000_000.0 + MAX_S - 1
    assert client.get("/console/who").text == "u"  # just inside
    clock.now = 1_000_000.0 + MAX_S + 1
    assert client.get("/console/who").text == "nobody"  # just outside


def test_a_sign_in_under_way_expires_and_sign_in_changes_the_session_id(session_app):
    app, clock = session_app
    client = app.test_client()
    client.get("/console/pending")
    before = client.get_cookie("cds-console", path="/console").value
    clock.now += PENDING_S - 1
    client.get("/console/in")
    after = client.get_cookie("cds-console", path="/console").value
    assert after != before  # no session fixation: the pre-sign-in id is worthless
    other = app.test_client()
    other.set_cookie("cds-console", before, path="/console")
    assert other.get("/console/who").text == "nobody"
    assert client.get("/console/who").text == "u"
    pending = app.test_client()
    pending.get("/console/pending")
    clock.now += PENDING_S + 1
    assert pending.get("/console/who").text == "nobody"
    # Every session above has expired by now (the signed-in one idle): a new one sweeps them.
    app.test_client().get("/console/pending")
    assert app.session_interface.store.count() == 1


def test_over_https_the_cookie_is_host_prefixed_and_secure():
    policy = CookiePolicy.for_base_url("https://cds.example.org/base")
    assert (policy.name, policy.path, policy.secure) == ("__Host-cds-console", "/", True)
    assert CookiePolicy.for_base_url("http://127.0.0.1:8080/cds").path == "/cds/console"


# ------------------------------------------------------------------------- in Chromium


@pytest.fixture
def tab(tmp_path) -> Iterator:
    """A fresh Chromium profile (no cookies) and a tab that fails the test on script errors."""
    from playwright.sync_api import sync_playwright
    from test_console_browser import CHROMIUM_ARGS, TIMEOUT_MS, install_chromium

    executable = install_chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(executable),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(f"console: {message.text}")
                if message.type == "error" and "status of 40" not in message.text
                else None
            ),
        )
        yield page
        context.close()
    assert problems == []


def provider_sign_in(page, account: dict) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    page.get_by_label("Username").fill(account["id"])
    page.get_by_label("Password").fill(account["password"])
    page.get_by_role("button", name="Sign in").click()


def test_in_a_browser_sign_in_review_send_feedback_sign_out_and_a_refused_user(world, tab):
    from playwright.sync_api import expect
    from test_console_browser import run_example, shot

    page, base = tab, world.base

    # 1. Any console page sends the browser to the provider; signed in, it comes back there.
    page.goto(f"{base}/console/rules")
    assert page.url.startswith(f"{world.provider.issuer}/interaction/")
    provider_sign_in(page, REVIEWER)
    expect(page).to_have_url(f"{base}/console/rules")
    expect(page.locator(".sign-out")).to_contain_text("Signed in as Rita Reviewer")
    expect(page.locator("section.rule")).to_have_count(12)

    # 2. Run an example and accept a suggestion: through the console, no client JWT.
    run_example(page, base, "scenarios/cauda-equina-coded")
    card = page.locator("article.cds-card-critical")
    expect(card.locator(".indicator-critical")).to_have_text("Critical")
    expect(page.locator(".comparison")).to_contain_text("As the example expects")
    accept = card.get_by_role("button", name="Refer to the emergency department now")
    accept.click()
    expect(card.locator(".feedback-status")).to_contain_text("feedback sent to the service")
    shot(page, "console-oidc-signed-in")
    cauda_uuid = card.get_attribute("data-card")

    # 3. Override another card with a reason.
    run_example(page, base, "scenarios/serious-fever-fahrenheit")
    warning = page.locator("article.cds-card-warning", has_text="serious")
    warning.get_by_label("Override reason").select_option(label="Not applicable to this patient")
    warning.get_by_role("button", name="Override").click()
    expect(warning.locator(".feedback-status")).to_contain_text(
        "Overridden: Not applicable to this patient"
    )

    # A POST from the page without the session's CSRF token is refused.
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: "POST", headers: {"Content-Type":
        "application/json"}, body: "{}"})).status""",
        f"{base}/console/api/cds-services/{PV}/feedback",
    )
    assert status == 403

    # 4. The feedback reached the CDS Hooks feedback store and the analytics.
    with sqlite3.connect(world.service.data_dir / "feedback.sqlite3") as db:
        outcomes = db.execute(
            "SELECT outcome FROM feedback WHERE card_uuid = ?", (cauda_uuid,)
        ).fetchall()
    assert outcomes == [("accepted",)]
    page.get_by_role("navigation").get_by_role("link", name="Feedback analytics").click()
    cauda = page.locator('tr[data-rule="cauda-equina-red-flag"]')
    expect(cauda.locator('[data-col="accepted"]')).not_to_have_text("0")
    serious = page.locator('tr[data-rule="serious-pathology-red-flag"]')
    expect(serious.locator('[data-col="reasons"]')).to_contain_text(
        "Not applicable to this patient"
    )

    # 5. Sign out: the console's session and the provider's end.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/console/signed-out(\?state=[^&]*)?$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    page.goto(f"{base}/console/analytics")
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    answer = page.request.get(f"{base}/console/examples/scenarios/cramps-only")
    assert answer.status == 401

    # 6. Another account, without the granted group: refused, and stays refused.
    provider_sign_in(page, BYSTANDER)
    expect(page.get_by_role("heading", level=1)).to_have_text("Access not granted")
    expect(page.locator(".sign-out")).to_have_count(0)
    shot(page, "console-oidc-refused")
    response = page.goto(f"{base}/console/")
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Access not granted")
    assert page.request.get(f"{base}/console/examples/scenarios/cramps-only").status == 401


# ------------------------------------------------------------ several instances, one Redis


def test_with_redis_every_instance_knows_a_session_another_opened(tmp_path):
    """Behind a load balancer the browser's next request may reach another instance: with
    CDS_REDIS_URL the sessions live in Redis, so the session opened on one is open on the other,
    and signing out on either ends it on both."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"  # the public URL both instances are reached by
    provider = start_provider(tmp_path, base)
    services: list[ServiceProcess] = []
    try:
        with redis_prefix() as prefix:
            env = {
                **oidc_env(provider.issuer),
                "CDS_TRUST_CONFIG": str(trust_file(tmp_path)),
                "CDS_PUBLIC_BASE_URL": base,
                "CDS_REDIS_URL": REDIS_TEST_URL,
                "CDS_REDIS_KEY_PREFIX": prefix,
            }
            for n, instance_port in enumerate((port, free_port())):
                workdir = tmp_path / f"instance-{n}"  # data dirs of their own: nothing shared
                workdir.mkdir()
                services.append(
                    start_service(workdir, env, workers=1, auth=True, port=instance_port)
                )
            other = services[1].base_url
            world = World(provider, services[0])
            landed = sign_in(world, REVIEWER)
            assert landed.status_code == 200 and landed.url == f"{base}/console/"
            browser = landed.session
            cookie = browser.cookies.get("cds-console")
            on_other = requests.get(
                f"{other}/console/rules", cookies={"cds-console": cookie}, timeout=30
            )
            assert on_other.status_code == 200
            assert "Signed in as <strong>Rita Reviewer</strong>" in on_other.text
            token = csrf_of(on_other.text)
            out = requests.post(
                f"{other}/console/logout",
                data={"csrf_token": token},
                cookies={"cds-console": cookie},
                allow_redirects=False,
                timeout=30,
            )
            assert out.status_code == 303
            after = browser.get(f"{base}/console/", allow_redirects=False, timeout=30)
            assert after.status_code == 302 and "/console/login" in after.headers["Location"]
            assert not (tmp_path / "instance-0" / "data" / "console-sessions.sqlite3").exists()
    finally:
        for service in services:
            stop(service.process)
        stop(provider.process)
