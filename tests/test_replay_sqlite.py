"""The embedded (SQLite) replay store's one-statement path: a token id accepted once, free again
once expired, and a store that does not answer refused as StoreUnavailable (503), as the
SQLAlchemy Connection path it replaced did; other database errors still raise."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from cds_service.errors import StoreUnavailable
from cds_service.stores.replay import SqliteReplayStore
from cds_service.stores.sql import sqlite_engine


@pytest.fixture
def store(tmp_path):
    return SqliteReplayStore(sqlite_engine(tmp_path / "replay.sqlite3"))


def test_an_id_is_accepted_once_then_again_after_it_expired(store):
    assert store.first_use("iss", "a", time.time() + 60) is True
    assert store.first_use("iss", "a", time.time() + 60) is False
    assert store.first_use("other-iss", "a", time.time() + 60) is True
    assert store.first_use("iss", "gone", time.time() - 1) is True
    assert store.first_use("iss", "gone", time.time() + 60) is True  # the earlier use expired


def test_the_purge_keeps_ids_that_can_still_be_replayed(store):
    for n in range(300):  # about 1 in 64 inserts also purges
        assert store.first_use("iss", f"id-{n}", time.time() + 60) is True
    assert all(store.first_use("iss", f"id-{n}", time.time() + 60) is False for n in range(300))


def test_a_store_that_does_not_answer_is_unavailable(tmp_path):
    path = tmp_path / "replay.sqlite3"
    store = SqliteReplayStore(sqlite_engine(path))
    with sqlite3.connect(path) as other:
        other.execute("DROP TABLE seen_jti")  # "no such table": an OperationalError
    with pytest.raises(StoreUnavailable):
        store.first_use("iss", "a", time.time() + 60)


def test_a_file_that_is_not_a_database_is_a_defect_not_unavailability(tmp_path):
    path = tmp_path / "replay.sqlite3"
    store = SqliteReplayStore(sqlite_engine(path))
    store._engine.dispose()
    path.write_bytes(b"not a database" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"replay.sqlite3{suffix}").unlink(missing_ok=True)
    with pytest.raises(sa.exc.DatabaseError) as raised:
        store.first_use("iss", "a", time.time() + 60)
    assert not isinstance(raised.value, sa.exc.OperationalError)
