"""alarm_rules and alarms: defect-rate alarms, one open alarm per rule

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("max_rate", sa.Float(), nullable=False),
        sa.Column("window_minutes", sa.Integer(), nullable=False),
        sa.Column("min_verdicts", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('line', 'camera')", name=op.f("ck_alarm_rules_scope")),
        sa.CheckConstraint("max_rate >= 0 AND max_rate < 1",
                           name=op.f("ck_alarm_rules_max_rate")),
        sa.CheckConstraint("window_minutes >= 1", name=op.f("ck_alarm_rules_window_minutes")),
        sa.CheckConstraint("min_verdicts >= 1", name=op.f("ck_alarm_rules_min_verdicts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_alarm_rules_name")),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("anomalous", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(100), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["rule_id"], ["alarm_rules.id"],
                                name=op.f("fk_alarms_rule_id_alarm_rules")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    op.create_index("uq_alarms_open_rule", "alarms", ["rule_id"], unique=True,
                    postgresql_where=sa.text("cleared_at IS NULL"),
                    sqlite_where=sa.text("cleared_at IS NULL"))
    op.create_index("ix_alarms_raised_at", "alarms", ["raised_at"])


def downgrade() -> None:
    op.drop_index("ix_alarms_raised_at", table_name="alarms")
    op.drop_index("uq_alarms_open_rule", table_name="alarms")
    op.drop_table("alarms")
    op.drop_table("alarm_rules")
