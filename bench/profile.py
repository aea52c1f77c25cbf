"""Where the time of the typical request goes, stage by stage, in process.

    .venv/bin/python bench/profile.py [--runs N] [--stores server]

Each stage of a served request is timed on its own (median of N runs, the body parsed afresh
for each): parse, tolerant pass, request validation, gather (full prefetch: no FHIR calls),
chart, rules, cards, serialise; then the whole request through Flask's test client, the HTTP
layer alone (Flask, the request hooks, the access log line, the audit queue: the whole request
with the engine's answer canned), the ceiling app's whole request; then client-token
verification per algorithm, without and with the SQLite replay store (and the Redis one with
`--stores server`, which also runs the HTTP rows on PostgreSQL + Redis: a fresh database and
key prefix, as bench/scale.py makes them). Runs against whatever
cds_service is importable, so the same script measured the code before issue 15's changes
(bench/profile.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPICAL = ROOT / "fhir_examples" / "scenarios" / "mixed-three-causes.request.json"
NOW = "2026-11-20T12:00:00Z"
SERVICE_ID = "cramp-sciatica-patient-view"


def _median_us(runs: int, prepare, work) -> float:
    times = []
    for _ in range(runs):
        state = prepare()
        started = time.perf_counter()
        work(state)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def stages(runs: int) -> dict[str, float]:
    from cds_service import cards, fhirdates
    from cds_service.chart import build_chart
    from cds_service.engine import Engine, validate_request
    from cds_service.gather import gather
    from cds_service.rules import evaluate_rules
    from cds_service.services import SERVICES
    from cds_service.settings import Settings
    from cds_service.tolerant import tolerate

    try:  # after issue 15: the service's own reader and writer
        from cds_service import jsonio

        def parse(raw: bytes) -> object:
            return jsonio.fast_loads(raw)

        def serialise(value: object) -> bytes:
            return jsonio.dumps(value)
    except ImportError:  # before: what api.read_json and json_response did
        from cds_service.api import _bounded_int, _not_json

        def parse(raw: bytes) -> object:
            return json.loads(raw.decode("utf-8"), parse_constant=_not_json, parse_int=_bounded_int)

        def serialise(value: object) -> bytes:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            return text.encode("utf-8", "backslashreplace")

    now = fhirdates.parse(NOW)
    engine = Engine(Settings(fixed_now=now))
    service = next(s for s in SERVICES if s.id == SERVICE_ID)
    raw = TYPICAL.read_bytes()
    for _ in range(50):
        engine.evaluate(service, json.loads(raw))

    def fresh():
        return json.loads(raw)

    def tolerated():
        body = json.loads(raw)
        tolerate(body, service.prefetch)
        return body

    def gathered():
        body = tolerated()
        return body, gather(service, body, engine.client, 3.0, None)

    def charted():
        body, got = gathered()
        return body, build_chart(service.hook, body["context"], got, engine.terminology, now)

    def ruled():
        body, chart = charted()
        return body, chart, evaluate_rules(chart)

    def rendered():
        body, chart, (findings, trigger) = ruled()
        return {"cards": cards.render(findings, trigger, chart, body["hookInstance"])}

    result = {
        "parse": _median_us(runs, lambda: raw, parse),
        "tolerant pass": _median_us(runs, fresh, lambda b: tolerate(b, service.prefetch)),
        "validate": _median_us(runs, tolerated, lambda b: validate_request(service, b)),
        "gather (prefetch)": _median_us(
            runs, tolerated, lambda b: gather(service, b, engine.client, 3.0, None)
        ),
        "chart": _median_us(
            runs,
            gathered,
            lambda s: build_chart(service.hook, s[0]["context"], s[1], engine.terminology, now),
        ),
        "rules": _median_us(runs, charted, lambda s: evaluate_rules(s[1])),
        "cards": _median_us(
            runs,
            ruled,
            lambda s: cards.render(s[2][0], s[2][1], s[1], s[0]["hookInstance"]),
        ),
        "serialise": _median_us(runs, rendered, serialise),
    }
    result["engine.evaluate (whole)"] = _median_us(
        runs, fresh, lambda b: engine.evaluate(service, b)
    )
    engine.close()
    return result


def _calls_per_request(post, requests: int = 50) -> float:
    """Python function calls per request (cProfile's count): unlike a time, the same on a
    busy machine as on an idle one, so two trees compare in any weather."""
    # Run as a script, this file's folder comes first on sys.path, and its name hides the
    # standard library's `profile`, which cProfile imports: look it up without that folder.
    here = str(Path(__file__).resolve().parent)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    sys.modules.pop("profile", None)
    try:
        import cProfile
        import pstats
    finally:
        sys.path[:] = saved

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        post(None)
    profiler.disable()
    return sum(row[1] for row in pstats.Stats(profiler).stats.values()) / requests


def http(runs: int, server: dict | None = None) -> tuple[float, float, float, float, float]:
    """The whole request through Flask's test client (no sockets), --no-auth; the same with
    the engine's answer canned (what Flask, the request hooks, the access log line and the
    audit queue cost); and the ceiling app's whole request; then the function calls per
    request of the canned one and of the ceiling's. `server`: the PostgreSQL + Redis
    settings (else the embedded stores)."""
    from cds_service import fhirdates
    from cds_service.app import create_app
    from cds_service.settings import Settings

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="cds-profile-")),
        auth_enabled=False,
        log_level="WARNING",
        fixed_now=fhirdates.parse(NOW),
        **(server or {}),
    )
    client = create_app(settings).test_client()
    raw = TYPICAL.read_bytes()
    url = f"/cds-services/{SERVICE_ID}"

    def post(_):
        assert client.post(url, data=raw, content_type="application/json").status_code == 200

    for _ in range(50):
        post(None)
    whole = _median_us(runs, lambda: None, post)
    app = client.application
    engine = app.extensions["cds_engine"]
    from cds_service.services import find_service

    outcome = engine.evaluate(find_service(SERVICE_ID), json.loads(raw))
    engine.evaluate = lambda *args, **kwargs: outcome
    canned = _median_us(runs, lambda: None, post)
    canned_calls = _calls_per_request(post)
    sys.path.insert(0, str(ROOT / "bench"))
    from ceiling import app as ceiling_app

    ceiling = ceiling_app.test_client()

    def post_ceiling(_):
        ceiling.post(url, data=raw, content_type="application/json")

    for _ in range(50):
        post_ceiling(None)
    ceiling_us = _median_us(runs, lambda: None, post_ceiling)
    return whole, canned, ceiling_us, canned_calls, _calls_per_request(post_ceiling)


def auth(runs: int, server: dict | None = None) -> dict[str, tuple[float, ...]]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from cds_service.auth import Authenticator, KeySource
    from cds_service.trust import load_trust

    try:  # since the stores layer (issue 14)
        from cds_service.stores.replay import RedisReplayStore, SqliteReplayStore
        from cds_service.stores.sql import sqlite_engine

        def sqlite_replay(path: Path):
            return SqliteReplayStore(sqlite_engine(path))
    except ImportError:  # before
        from cds_service.auth import SqliteReplayStore as sqlite_replay

        RedisReplayStore = None

    class NoReplay:
        def first_use(self, *args) -> bool:
            return True

    folder = Path(tempfile.mkdtemp(prefix="cds-profile-auth-"))
    aud = "https://cds.example/cds-services/x"
    out = {}
    for alg, key in (
        ("ES384", ec.generate_private_key(ec.SECP384R1())),
        ("RS384", rsa.generate_private_key(public_exponent=65537, key_size=3072)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ):
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(key.public_key())) | {"kid": alg, "alg": alg}
        path = folder / f"trust-{alg}.json"
        path.write_text(json.dumps({"issuers": [{"iss": "https://p", "jwks": {"keys": [jwk]}}]}))
        trust = load_trust(path)
        now = int(time.time())

        def token(_now=now, _key=key, _alg=alg):
            claims = {"iss": "https://p", "aud": aud, "iat": _now, "exp": _now + 300}
            claims["jti"] = uuid.uuid4().hex
            return jwt.encode(claims, _key, algorithm=_alg, headers={"kid": _alg, "typ": "JWT"})

        timings = []
        stores = [NoReplay(), sqlite_replay(folder / f"replay-{alg}.sqlite3")]
        if server and RedisReplayStore is not None:
            stores.append(RedisReplayStore(server["redis_url"], server["redis_key_prefix"]))
        for replay in stores:
            verifier = Authenticator(trust, KeySource(trust, 300, 30), replay, 30)
            timings.append(
                _median_us(
                    runs, lambda: "Bearer " + token(), lambda t, v=verifier: v.verify(t, aud)
                )
            )
        out[alg] = tuple(timings)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--stores", choices=["embedded", "server"], default="embedded")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with contextlib.ExitStack() as stack:
        server = None
        if args.stores == "server":
            sys.path.insert(0, str(ROOT / "bench"))
            sys.path.insert(0, str(ROOT / "tests"))
            from scale import server_stores

            env = stack.enter_context(server_stores(Path(tempfile.mkdtemp(prefix="cds-prof-"))))
            server = {
                "database_url": env["CDS_DATABASE_URL"],
                "redis_url": env["CDS_REDIS_URL"],
                "redis_key_prefix": env["CDS_REDIS_KEY_PREFIX"],
                "log_hash_key": env["CDS_LOG_HASH_KEY"],
            }
        report(args.runs, server)
    return 0


def report(runs: int, server: dict | None) -> None:
    times = stages(runs)
    whole, canned, ceiling, canned_calls, ceiling_calls = http(runs, server)
    print("| stage | us |")
    print("|---|---|")
    for name, value in times.items():
        print(f"| {name} | {value:.0f} |")
    print(f"| HTTP layer: whole request, the engine's answer canned | {canned:.0f} |")
    print(f"| whole request (Flask test client) | {whole:.0f} |")
    print(f"| ceiling app, whole request (Flask test client) | {ceiling:.0f} |")
    print(f"| HTTP layer, engine canned: Python function calls per request | {canned_calls:.0f} |")
    print(f"| ceiling app: Python function calls per request | {ceiling_calls:.0f} |")
    for alg, (bare, replay, *redis) in auth(max(50, runs // 4), server).items():
        extra = replay - bare
        print(f"| token verification {alg} (+ SQLite replay store) | {bare:.0f} (+{extra:.0f}) |")
        if redis:
            print(f"| token verification {alg} (+ Redis replay store) | +{redis[0] - bare:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
