"""label_conflicts: a label that overturned another author's label on the same verdict

Revision ID: 0008_i34
Revises: 0007_i32
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_i34"
down_revision = "0007_i32"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "label_conflicts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("verdict_id", _ID, nullable=False),
        sa.Column("label_id", _ID, nullable=False),
        sa.Column("previous_label_id", _ID, nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("previous_label", sa.String(32), nullable=False),
        sa.Column("previous_author", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["verdict_id"], ["verdicts.id"],
                                name=op.f("fk_label_conflicts_verdict_id_verdicts")),
        sa.ForeignKeyConstraint(["label_id"], ["operator_labels.id"],
                                name=op.f("fk_label_conflicts_label_id_operator_labels")),
        sa.ForeignKeyConstraint(
            ["previous_label_id"], ["operator_labels.id"],
            name=op.f("fk_label_conflicts_previous_label_id_operator_labels")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_conflicts")),
    )
    op.create_index("ix_label_conflicts_verdict_id", "label_conflicts", ["verdict_id"])
    op.create_index("ix_label_conflicts_open", "label_conflicts", ["resolved_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_label_conflicts_open", table_name="label_conflicts")
    op.drop_index("ix_label_conflicts_verdict_id", table_name="label_conflicts")
    op.drop_table("label_conflicts")
