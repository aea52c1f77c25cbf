"""audit: invocations and the cards they showed (the schema of the first release; IF NOT
EXISTS adopts an audit.sqlite3 written before migrations existed).

Revision ID: audit_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

IsoText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "invocation",
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
        if_not_exists=True,
    )
    op.create_table(
        "card",
        sa.Column("card_uuid", sa.Text, primary_key=True),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("indicator", sa.Text, nullable=False),
        sa.Column("invocation_id", RowId, sa.ForeignKey("invocation.id"), primary_key=True),
        if_not_exists=True,
    )
    op.create_index("invocation_time", "invocation", ["time"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("card")
    op.drop_table("invocation")
