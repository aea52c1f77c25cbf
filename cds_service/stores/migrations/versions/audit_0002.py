"""audit: a unique event id per invocation, made when it is recorded, so a row written twice
(a spool drained again after a crash) is stored once. Rows from before keep NULL.

Revision ID: audit_0002
Revises: audit_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocation", sa.Column("event_id", sa.Text))
    op.create_index("invocation_event", "invocation", ["event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("invocation_event", "invocation")
    op.drop_column("invocation", "event_id")
