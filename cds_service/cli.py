"""`cds-service serve | evaluate | replay | note-context`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from pathlib import Path

from . import __version__
from .errors import CdsError, ConfigurationError, StoreUnavailable
from .services import SERVICES
from .settings import Settings

log = logging.getLogger("cds_service")
HOOKS = {service.hook: service for service in SERVICES}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("db", "analytics", "quiet"):
        # The stores' JSON event lines are for a service's log; here the one line below says it.
        logging.getLogger("cds_service.stores").setLevel(logging.ERROR)
    try:
        return args.run(args)
    except StoreUnavailable:
        # (`answering` logged the driver's error type; the message is the HTTP answer's)
        print(f"cds-service: the database {_where()} is not available", file=sys.stderr)
        return 2
    except (CdsError, ConfigurationError, OSError) as exc:
        print(f"cds-service: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = _database_failure(exc)
        if line is None:
            raise  # a defect: its traceback is what a bug report needs
        print(f"cds-service: {line}", file=sys.stderr)
        return 2


def _database_failure(exc: Exception) -> str | None:
    """One line for a database that does not answer (refused, timed out, a wrong password):
    the URL with its password hidden, the driver's first line with it hidden too."""
    if "sqlalchemy" not in sys.modules:
        return None
    import sqlalchemy as sa

    from .stores.sql import is_unavailable, safe_url

    if not (isinstance(exc, sa.exc.SQLAlchemyError) and is_unavailable(exc)):
        return None
    url = os.environ.get("CDS_DATABASE_URL", "")
    cause = getattr(exc, "orig", None) or exc
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    password = sa.make_url(url).password if url and safe_url(url) != "(unparsable URL)" else None
    if password:
        detail = detail.replace(str(password), "***")
    return f"the database {_where()} is not available ({type(cause).__name__}: {detail})"


def _where() -> str:
    from .stores.sql import safe_url

    url = os.environ.get("CDS_DATABASE_URL", "")
    return safe_url(url) if url else "(the embedded files in CDS_DATA_DIR)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="default: one per core"
    )
    serve.add_argument(
        "--worker-class",
        choices=["gevent", "gthread"],
        default="gevent",
        help="gevent (default): a greenlet per connection, so slow clients cannot hold the "
        "workers; gthread: a fixed pool of --threads per worker",
    )
    serve.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="DEVELOPMENT ONLY: accept calls without verifying the client's JWT",
    )
    serve.set_defaults(run=_serve)

    evaluate = commands.add_parser("evaluate", help="print the response to a hook request file")
    evaluate.add_argument("request", type=Path, help="a hook request JSON file")
    evaluate.add_argument("--now", help="evaluate as of this time (ISO 8601), for reproducibility")
    evaluate.set_defaults(run=_evaluate)

    replay = commands.add_parser("replay", help="evaluate a patient who lives on a FHIR server")
    replay.add_argument("--fhir-server", required=True, help="FHIR base URL")
    replay.add_argument("--patient", required=True, help="Patient id")
    replay.add_argument("--hook", default="patient-view", choices=sorted(HOOKS))
    replay.add_argument("--token", help="bearer token for the FHIR server")
    replay.add_argument("--json", action="store_true", help="print the response JSON")
    replay.set_defaults(run=_replay)

    keygen = commands.add_parser("keygen", help="make a key pair and its JWKS, for local testing")
    keygen.add_argument("--dir", type=Path, required=True, help="where to write the files")
    keygen.add_argument("--alg", default="ES384", choices=["ES384", "RS384"])
    keygen.add_argument("--kid", help="key id (default: random)")
    keygen.set_defaults(run=_keygen)

    sign = commands.add_parser("sign-token", help="print a signed client JWT, for local testing")
    sign.add_argument("--key", type=Path, required=True, help="private key PEM from keygen")
    sign.add_argument("--kid", required=True)
    sign.add_argument("--iss", required=True, help="issuer, as in the trust configuration")
    sign.add_argument("--aud", required=True, help="the endpoint URL the token is for")
    sign.add_argument("--alg", default="ES384", choices=["ES384", "RS384"])
    sign.add_argument("--tenant")
    sign.add_argument("--jku", help="JWKS URL to name in the header")
    sign.add_argument("--ttl", type=int, default=300, help="seconds (default 300)")
    sign.set_defaults(run=_sign_token)

    db = commands.add_parser("db", help="the database schema (Alembic migrations)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="migrate CDS_DATABASE_URL (or the embedded files) to this version"
    )
    upgrade.set_defaults(run=_db_upgrade)
    current = db_commands.add_parser("current", help="print the schema revision(s)")
    current.set_defaults(run=_db_current)

    report = commands.add_parser(
        "analytics",
        help="per rule: cards shown, accepted, overridden, override reasons (from the store)",
    )
    report.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    report.add_argument("--to", dest="end", required=True, help="last day (included)")
    report.add_argument("--json", action="store_true", help="print JSON rows")
    report.set_defaults(run=_analytics)

    quieted = commands.add_parser(
        "quiet", help="cards quieted by feedback (issue 16): list the entries, lift one"
    )
    quiet_commands = quieted.add_subparsers(dest="quiet_command", required=True)
    listing = quiet_commands.add_parser("list", help="the entries quieting cards today")
    listing.add_argument("--all", action="store_true", help="lifted and ended entries too")
    listing.add_argument("--json", action="store_true", help="print JSON rows")
    listing.set_defaults(run=_quiet_list)
    lift = quiet_commands.add_parser("lift", help="stop an entry now: its card shows again")
    lift.add_argument("entry", type=int, help="the entry's id (from `quiet list`)")
    lift.set_defaults(run=_quiet_lift)

    note = commands.add_parser(
        "note-context",
        help="why the note reader reads a phrase as it does: its status and what decided",
    )
    note.add_argument("--text", required=True, help="the note text")
    note.add_argument(
        "--target", required=True, help="a phrase in the text (first occurrence, any case)"
    )
    note.set_defaults(run=_note_context)
    return parser


def _db_upgrade(args: argparse.Namespace) -> int:
    from .stores import migrate

    for part, revisions in migrate.upgrade(Settings.from_env()).items():
        print(f"{part}: {', '.join(sorted(revisions))}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from .stores import migrate

    settings = Settings.from_env()
    found = migrate.revisions(settings)
    for part, revisions in found.items():
        print(f"{part}: {', '.join(sorted(revisions)) or 'no schema'}")
    late = migrate.behind(set().union(*found.values())) if settings.database_url else []
    if late:
        print("behind: run `cds-service db upgrade`")
    return 0


def _analytics(args: argparse.Namespace) -> int:
    from datetime import date

    from . import analytics
    from .rules import RULE_IDS
    from .stores import open_stores

    try:
        period = analytics.Period(date.fromisoformat(args.start), date.fromisoformat(args.end))
    except ValueError:
        raise ConfigurationError(
            f"--from and --to must be dates (YYYY-MM-DD), --from not after --to: "
            f"got {args.start!r} and {args.end!r}"
        ) from None
    settings = Settings.from_env()
    stores = open_stores(settings, replay=False, writer=False)
    try:
        rows = stores.analytics.rule_activity(period, RULE_IDS)
    finally:
        stores.close()
    if args.json:
        print(json.dumps([_activity_json(row, period) for row in rows], indent=2))
    else:
        print(_activity_table(rows, period))
    return 0


def _activity_json(row, period) -> dict:
    from . import analytics

    return {
        "rule_id": row.rule_id,
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "fired": row.fired,
        **{f"fired_{i}": row.indicators.get(i, 0) for i in analytics.INDICATORS},
        "accepted": row.accepted,
        "overridden": row.overridden,
        "quieted": row.quieted,
        "override_reasons": [
            {"system": system, "code": code, "count": count}
            for (system, code), count in sorted(
                row.reasons.items(), key=lambda kv: (-kv[1], str(kv[0]))
            )
        ],
    }


def _activity_table(rows, period) -> str:
    from .analytics import INDICATORS

    header = ("rule", "shown", "critical", "warning", "info", "accepted", "overridden", "quieted")
    lines = [f"{period.start.isoformat()} to {period.end.isoformat()} (UTC days, both included)"]
    table = [header]
    for row in rows:
        table.append(
            (
                row.rule_id or "(card not in the audit trail)",
                str(row.fired),
                *(str(row.indicators.get(i, 0)) for i in INDICATORS),
                str(row.accepted),
                str(row.overridden),
                str(row.quieted),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    for row in rows:
        for (_system, code), count in sorted(row.reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {row.rule_id}: overridden, {code or '(no reason given)'}: {count}")
    return "\n".join(lines)


def _quieting():
    from .audit import PatientHasher
    from .quiet import Quieting
    from .stores import open_stores

    settings = Settings.from_env()
    stores = open_stores(settings, replay=False, writer=False)
    return (
        settings,
        stores,
        Quieting(stores.quiet, PatientHasher(settings.log_hash_key, settings.data_dir)),
    )


def _quiet_list(args: argparse.Namespace) -> int:
    from .quiet import today

    settings, stores, quieting = _quieting()
    try:
        day = today(settings)
        quieting.settle(day)
        entries = stores.quiet.entries(active_on=None if args.all else day)
    finally:
        stores.close()
    rows = [
        {
            "id": e.id,
            "rule_id": e.rule_id,
            "indicator": e.indicator,
            "reason": e.reason,
            "from": e.from_day.isoformat(),
            "until": e.until.isoformat() if e.until else None,
            "patient_hash": e.patient_hash,
            "card": e.card_uuid,
            "lifted_at": e.lifted_at,
            "lifted_by": e.lifted_by,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no cards are quieted" if not args.all else "no quiet entries")
    for row in rows:
        state = f", lifted {row['lifted_at']} by {row['lifted_by']}" if row["lifted_at"] else ""
        print(
            f"{row['id']}  {row['rule_id']} ({row['indicator']})  {row['from']} to "
            f"{row['until']}  {row['reason']}  patient {row['patient_hash']}{state}"
        )
    return 0


def _quiet_lift(args: argparse.Namespace) -> int:
    _settings, stores, quieting = _quieting()
    try:
        lifted = quieting.lift(args.entry, "cli")
    finally:
        stores.close()
    print(f"entry {args.entry}: " + ("lifted" if lifted else "not running (unknown or lifted)"))
    return 0 if lifted else 1


def _note_context(args: argparse.Namespace) -> int:
    from . import notes

    try:
        answer = notes.context(args.text, args.target)
    except ValueError as exc:
        raise ConfigurationError(f"--target: {exc}") from None
    print(json.dumps(answer.as_dict(), indent=2, ensure_ascii=False))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .keys import make_key_pair

    kid = make_key_pair(args.dir, args.alg, args.kid)
    print(f"kid {kid}: private key {args.dir / 'private-key.pem'}, JWKS {args.dir / 'jwks.json'}")
    return 0


def _sign_token(args: argparse.Namespace) -> int:
    from .keys import sign_token

    print(
        sign_token(
            args.key,
            kid=args.kid,
            iss=args.iss,
            aud=args.aud,
            alg=args.alg,
            tenant=args.tenant,
            jku=args.jku,
            ttl_s=args.ttl,
        )
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    if args.worker_class == "gevent":
        # Before the service's modules import ssl, requests or urllib3 (and before the workers
        # fork): patched late, their sockets and SSL contexts would block the whole worker.
        from gevent import monkey

        monkey.patch_all()
    # No format of the service's or gunicorn's log lines shows a thread's name or a
    # multiprocessing process name, and under gevent every record paid for looking them up
    # (threading.current_thread() through the patched module: half of a record's cost).
    logging.logThreads = False
    logging.logMultiprocessing = False
    from .server import run

    settings = Settings.from_env(auth_enabled=not args.no_auth)
    if args.workers < 1 or args.threads < 1:
        raise ConfigurationError("--workers and --threads must be at least 1")
    run(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
    )
    return 0


def _engine():
    from .engine import Engine

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return Engine(Settings.from_env())


def _now(text: str | None):
    if text is None:
        return None
    from . import fhirdates

    moment = fhirdates.parse(text)
    if moment is None:
        raise ConfigurationError(f"--now is not an ISO 8601 date or time: {text!r}")
    return moment


def _evaluate(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.request.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        message = f"{args.request} is not valid JSON ({exc.msg}, line {exc.lineno})"
        raise ConfigurationError(message) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{args.request} is not valid UTF-8") from None
    except RecursionError:
        raise ConfigurationError(f"{args.request} is not valid JSON (nested too deeply)") from None
    if not isinstance(body, dict) or not isinstance(body.get("hook"), str):
        raise ConfigurationError(f"{args.request} is not a hook request (no 'hook' field)")
    service = HOOKS.get(body["hook"])
    if service is None:
        raise ConfigurationError(f"no service answers the hook '{body['hook']}'")
    engine = _engine()
    try:
        outcome = engine.evaluate(service, body, now=_now(args.now))
    finally:
        engine.close()
    print(json.dumps(outcome.response, indent=2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    service = HOOKS[args.hook]
    context: dict = {"userId": "Practitioner/cds-service-replay", "patientId": args.patient}
    if args.hook in {"order-select", "order-sign"}:
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": []}
        if args.hook == "order-select":
            raise ConfigurationError("order-select needs selected draft orders: use 'evaluate'")
    if args.hook == service.hook and service.context_schema == "context-note-sign":
        raise ConfigurationError("note signing needs a draft note: use 'evaluate' with a file")
    body: dict = {
        "hook": args.hook,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": args.fhir_server.rstrip("/"),
        "context": context,
    }
    if args.token:
        body["fhirAuthorization"] = {
            "access_token": args.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service-replay",
        }
    engine = _engine()
    try:
        outcome = engine.evaluate(service, body)
    finally:
        engine.close()
    if args.json:
        print(json.dumps(outcome.response, indent=2))
    else:
        print(readable(outcome.response, args.patient))
    return 0


def readable(response: dict, patient: str) -> str:
    cards = response["cards"]
    if not cards:
        return f"Patient/{patient}: no cards (nothing to say for this patient)"
    lines = [f"Patient/{patient}: {len(cards)} card(s)"]
    for card in cards:
        topic = card["source"].get("topic", {}).get("code", "?")
        lines += ["", f"[{card['indicator'].upper()}] {card['summary']}", f"  rule: {topic}"]
        for suggestion in card.get("suggestions", []):
            lines.append(f"  suggestion: {suggestion['label']}")
        for link in card.get("links", []):
            lines.append(f"  link: {link['label']} <{link['url']}>")
    return "\n".join(lines)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, CdsError):
        return "; ".join(issue.diagnostics for issue in exc.issues)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
