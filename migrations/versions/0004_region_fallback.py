"""regions: fallback flag (the hottest area, shown when no pixel passed the region threshold)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # regions written before this revision were all cut at a threshold
    op.add_column("regions", sa.Column("fallback", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("regions") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("fallback")
