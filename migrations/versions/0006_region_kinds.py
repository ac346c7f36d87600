"""regions: kind key, describer and embedding; operator_labels: the kind a correction names

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All nullable: regions written before this revision have no kind, describer or
    # embedding (their description text stays), and most labels name no kind.
    op.add_column("regions", sa.Column("kind", sa.String(64), nullable=True))
    op.add_column("regions", sa.Column("describer", sa.String(64), nullable=True))
    op.add_column("regions", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.create_index("ix_regions_kind", "regions", ["kind"])
    op.add_column("operator_labels", sa.Column("kind", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_regions_kind", table_name="regions")
    with op.batch_alter_table("operator_labels") as batch:  # SQLite cannot drop in place
        batch.drop_column("kind")
    with op.batch_alter_table("regions") as batch:
        batch.drop_column("embedding")
        batch.drop_column("describer")
        batch.drop_column("kind")
