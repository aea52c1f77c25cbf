"""The tables, once, for both engines (SQLAlchemy Core). Only cds_service.stores reads them.

The embedded engine keeps today's files: `feedback.sqlite3` holds `feedback`, `audit.sqlite3`
holds `invocation` and `card`, `replay.sqlite3` holds `seen_jti`. A server database holds
`feedback`, `invocation` and `card` side by side (token ids go to Redis). The migrations in
`migrations/versions` build exactly these tables; `tests/test_stores.py` checks they agree.
"""

from __future__ import annotations

import sqlalchemy as sa

# ISO 8601 UTC strings compared as text (`time >= '2026-03-10'`): byte order on PostgreSQL too,
# where a linguistic collation could order punctuation differently.
IsoText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
# An INTEGER PRIMARY KEY is SQLite's rowid; PostgreSQL gets a 64-bit identity.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

feedback_metadata = sa.MetaData()
audit_metadata = sa.MetaData()
replay_metadata = sa.MetaData()

feedback = sa.Table(
    "feedback",
    feedback_metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("service_id", sa.Text, nullable=False),
    sa.Column("card_uuid", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("outcome_timestamp", sa.Text, nullable=False),
    sa.Column("accepted_suggestions", sa.Text),
    sa.Column("override_reason_system", sa.Text),
    sa.Column("override_reason_code", sa.Text),
    sa.Column("received_at", IsoText, nullable=False),
    sa.Index("feedback_card", "card_uuid"),
)

invocation = sa.Table(
    "invocation",
    audit_metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("time", IsoText, nullable=False),
    sa.Column("service_id", sa.Text),
    sa.Column("hook", sa.Text),
    sa.Column("hook_instance", sa.Text),
    sa.Column("issuer", sa.Text),
    sa.Column("tenant", sa.Text),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("patient_hash", sa.Text),
    sa.Column("rule_ids", sa.Text),
    sa.Column("fetched", sa.Text),
    # Made when the row is recorded: a row written twice (a spool drained after a crash) is
    # stored once. NULL on rows written before revision audit_0002.
    sa.Column("event_id", sa.Text),
    sa.Index("invocation_time", "time"),
    sa.Index("invocation_event", "event_id", unique=True),
)

card = sa.Table(
    "card",
    audit_metadata,
    sa.Column("card_uuid", sa.Text, primary_key=True),
    sa.Column("rule_id", sa.Text, nullable=False),
    sa.Column("indicator", sa.Text, nullable=False),
    sa.Column("invocation_id", RowId, sa.ForeignKey("invocation.id"), primary_key=True),
)

seen_jti = sa.Table(
    "seen_jti",
    replay_metadata,
    sa.Column("iss", sa.Text, primary_key=True),
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("exp", sa.Float, nullable=False),
    sa.Index("seen_jti_exp", "exp"),
)
