"""Schema migrations (Alembic), run by `cds-service db upgrade`.

Two branches: `feedback` and `audit`. A server database holds both (its `alembic_version` has
a row per branch); the embedded store keeps each in its own file (`feedback.sqlite3`,
`audit.sqlite3`) and is upgraded at start, under a file lock so that concurrent workers do it
once. A later change of schema is one more revision on its branch (`down_revision` the
branch's head).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ..errors import ConfigurationError
from ..settings import Settings
from .sql import postgres_engine, safe_url, sqlite_engine

BRANCHES = ("feedback", "audit")
logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are not the operator's


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


@cache
def head(branch: str) -> str:
    return ScriptDirectory.from_config(_config()).get_revision(f"{branch}@head").revision


def _upgrade(engine: sa.Engine, target: str) -> None:
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, target)


def current(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return heads_on(connection)


def heads_on(connection: sa.Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


def embedded_files(settings: Settings) -> dict[str, Path]:
    return {"feedback": settings.feedback_db_path, "audit": settings.audit_db_path}


def upgrade(settings: Settings) -> dict[str, set[str]]:
    """Bring the configured store's schema to the newest revision; its revisions after."""
    if settings.database_url:
        engine = postgres_engine(settings.database_url)
        try:
            _upgrade(engine, "heads")
            return {"database": current(engine)}
        finally:
            engine.dispose()
    return upgrade_embedded(settings)


def upgrade_embedded(settings: Settings) -> dict[str, set[str]]:
    revisions = {}
    with locked(settings.data_dir / "migrate.lock"):
        for branch, path in embedded_files(settings).items():
            engine = sqlite_engine(path)
            try:
                if current(engine) != {head(branch)}:
                    _upgrade(engine, f"{branch}@head")
                revisions[branch] = current(engine)
            finally:
                engine.dispose()
    return revisions


def revisions(settings: Settings) -> dict[str, set[str]]:
    if settings.database_url:
        engine = postgres_engine(settings.database_url)
        try:
            return {"database": current(engine)}
        finally:
            engine.dispose()
    found = {}
    for branch, path in embedded_files(settings).items():
        if not path.exists():
            found[branch] = set()
            continue
        engine = sqlite_engine(path)
        try:
            found[branch] = current(engine)
        finally:
            engine.dispose()
    return found


def behind(have: set[str]) -> list[str]:
    """The branches whose newest revision the database lacks (a revision this version does
    not know, written by a newer one, is not behind: additive migrations keep it readable)."""
    script = ScriptDirectory.from_config(_config())
    unknown = have - {r.revision for r in script.walk_revisions()}
    late = []
    for branch in BRANCHES:
        older = {r.revision for r in script.iterate_revisions(f"{branch}@head", "base")}
        if head(branch) in have:
            continue
        if have & older or not unknown:
            late.append(branch)
    return late


def check_database(engine: sa.Engine, url: str) -> None:
    """ConfigurationError, naming the command, when the server database's schema is behind."""
    problem = behind_message(current(engine), url)
    if problem:
        raise ConfigurationError(f"{problem} before `serve`")


def behind_message(have: set[str], url: str) -> str | None:
    """What an operator must do when a database at revisions `have` is behind (None: it is
    not)."""
    if not behind(have):
        return None
    state = ", ".join(sorted(have)) or "no schema"
    wanted = ", ".join(head(b) for b in BRANCHES)
    return (
        f"the database {safe_url(url)} is at {state}, this version needs {wanted}: "
        "run `cds-service db upgrade` (with the same CDS_DATABASE_URL)"
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
