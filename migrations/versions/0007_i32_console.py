"""console: operators' latest word on verdicts and regions, operator accounts and their
sessions, stored thumbnails

Revision ID: 0007_i32
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_i32"
down_revision = "0006"
branch_labels = None
depends_on = None

# The latest decisive label of each verdict, and the latest description label of each
# region: what every page shows (operator_labels keeps the whole history).
_LATEST_DECISION = ("(SELECT {col} FROM operator_labels o WHERE o.verdict_id = verdicts.id "
                    "AND o.label IN ('normal', 'anomalous') ORDER BY o.id DESC LIMIT 1)")
_LATEST_DESCRIPTION = ("(SELECT {col} FROM operator_labels o WHERE o.region_id = regions.id "
                       "AND o.label = 'description' ORDER BY o.id DESC LIMIT 1)")


def upgrade() -> None:
    op.add_column("verdicts", sa.Column("operator_label", sa.String(16), nullable=True))
    op.add_column("verdicts", sa.Column("operator_label_by", sa.String(100), nullable=True))
    op.add_column("regions", sa.Column("operator_description", sa.String(200), nullable=True))
    op.add_column("regions", sa.Column("operator_kind", sa.String(64), nullable=True))
    op.add_column("regions", sa.Column("operator_by", sa.String(100), nullable=True))
    op.create_index("ix_regions_operator_kind", "regions", ["operator_kind"])
    op.create_index("ix_regions_operator_description", "regions", ["operator_description"])
    op.execute("UPDATE verdicts SET operator_label = {}, operator_label_by = {}".format(
        _LATEST_DECISION.format(col="o.label"), _LATEST_DECISION.format(col="o.author")))
    op.execute("UPDATE regions SET operator_description = {}, operator_kind = {}, "
               "operator_by = {}".format(_LATEST_DESCRIPTION.format(col="o.description"),
                                         _LATEST_DESCRIPTION.format(col="o.kind"),
                                         _LATEST_DESCRIPTION.format(col="o.author")))
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_console_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_console_sessions_secret_hash")),
    )
    op.create_table(
        "thumbnails",
        sa.Column("verdict_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("variant", sa.String(40), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["verdict_id"], ["verdicts.id"],
                                name=op.f("fk_thumbnails_verdict_id_verdicts")),
        sa.PrimaryKeyConstraint("verdict_id", "variant", name=op.f("pk_thumbnails")),
    )


def downgrade() -> None:
    op.drop_table("thumbnails")
    op.drop_table("console_sessions")
    op.drop_table("users")
    op.drop_index("ix_regions_operator_description", table_name="regions")
    op.drop_index("ix_regions_operator_kind", table_name="regions")
    with op.batch_alter_table("regions") as batch:  # SQLite cannot drop in place
        batch.drop_column("operator_by")
        batch.drop_column("operator_kind")
        batch.drop_column("operator_description")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("operator_label_by")
        batch.drop_column("operator_label")
