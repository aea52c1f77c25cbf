"""audit: quieting repeated cards (issue 16). Each card row gains the keyed digest of its
evidence and whether feedback quieted it; the `quiet` table holds the entries.

Revision ID: audit_0003
Revises: audit_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None

IsoText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("card", sa.Column("evidence_digest", sa.Text))
    op.add_column(
        "card", sa.Column("quieted", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.create_table(
        "quiet",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("from_day", IsoText, nullable=False),
        sa.Column("patient_hash", sa.Text),
        sa.Column("rule_id", sa.Text),
        sa.Column("indicator", sa.Text),
        sa.Column("evidence_digest", sa.Text),
        sa.Column("until_day", IsoText),
        sa.Column("lifted_at", IsoText),
        sa.Column("lifted_by", sa.Text),
    )
    op.create_index("quiet_card", "quiet", ["card_uuid"], unique=True)
    op.create_index("quiet_patient", "quiet", ["patient_hash", "until_day"])


def downgrade() -> None:
    op.drop_index("quiet_patient", "quiet")
    op.drop_index("quiet_card", "quiet")
    op.drop_table("quiet")
    with op.batch_alter_table("card") as batch:
        batch.drop_column("quieted")
        batch.drop_column("evidence_digest")
