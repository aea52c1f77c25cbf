"""feedback: one row per outcome, keyed by what identifies it (the schema of the first release;
IF NOT EXISTS adopts a feedback.sqlite3 written before migrations existed).

Revision ID: feedback_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "feedback_0001"
down_revision = None
branch_labels = ("feedback",)
depends_on = None

IsoText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("service_id", sa.Text, nullable=False),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("outcome_timestamp", sa.Text, nullable=False),
        sa.Column("accepted_suggestions", sa.Text),
        sa.Column("override_reason_system", sa.Text),
        sa.Column("override_reason_code", sa.Text),
        sa.Column("received_at", IsoText, nullable=False),
        if_not_exists=True,
    )
    op.create_index("feedback_card", "feedback", ["card_uuid"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("feedback")
