"""verdicts: index on (captured_at, id) for unfiltered history pages and windows

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_verdicts_time_id", "verdicts", ["captured_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_verdicts_time_id", table_name="verdicts")
