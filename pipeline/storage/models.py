"""The relational schema: lines, cameras, frames, verdicts, heatmaps, regions,
operator labels, model versions, API tokens, operator accounts, alarms and stored
thumbnails. Alembic owns the DDL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names keep migrations and autogenerate comparisons stable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERDICT_LABELS = ("normal", "anomalous")
MODEL_STATUSES = ("candidate", "active", "retired", "rejected")
OPERATOR_LABELS = ("anomalous", "normal", "description", "missing_region")
ROLES = ("viewer", "operator", "admin")
ALARM_SCOPES = ("line", "camera")

# BIGINT ids on Postgres; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ProductionLine(Base):
    __tablename__ = "production_lines"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Camera(Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line_id: Mapped[str] = mapped_column(ForeignKey("production_lines.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Frame(Base):
    __tablename__ = "frames"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id"))
    product: Mapped[str] = mapped_column(String(100))
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    width: Mapped[int]
    height: Mapped[int]
    content_type: Mapped[str] = mapped_column(String(32))
    kafka_topic: Mapped[str | None] = mapped_column(String(200))
    kafka_partition: Mapped[int | None]
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)
    # Where the original image bytes live (object store key or path), if kept.
    image_ref: Mapped[str | None] = mapped_column(String(500))
    image_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)


class Verdict(Base):
    __tablename__ = "verdicts"
    __table_args__ = (
        CheckConstraint(_one_of("label", VERDICT_LABELS), name="label"),
        # Camera, line and time are copied from the frame so the operator
        # queries hit one table through one index.
        Index("ix_verdicts_camera_time", "camera_id", "captured_at"),
        Index("ix_verdicts_line_time", "line_id", "captured_at"),
        Index("ix_verdicts_label_time", "label", "captured_at"),
        Index("ix_verdicts_product_time", "product", "captured_at"),
        # Unfiltered history pages newest first (keyset on time, id) and
        # plant-wide time windows for the aggregates.
        Index("ix_verdicts_time_id", "captured_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    frame_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("frames.id"), unique=True)
    camera_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(100))
    captured_at: Mapped[datetime]
    model_version: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the latest 'normal'/'anomalous' label an operator gave and who gave it (kept in step
    # by pipeline.storage.labels.add_label; operator_labels holds the whole history)
    operator_label: Mapped[str | None] = mapped_column(String(16))
    operator_label_by: Mapped[str | None] = mapped_column(String(100))

    heatmap: Mapped[Heatmap | None] = relationship(back_populates="verdict")
    regions: Mapped[list[Region]] = relationship(
        back_populates="verdict", order_by="Region.index"
    )


class Heatmap(Base):
    __tablename__ = "heatmaps"

    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"), primary_key=True)
    # 16-bit grayscale PNG of the map scaled to [0, max_value].
    encoding: Mapped[str] = mapped_column(String(16), default="png16")
    width: Mapped[int]
    height: Mapped[int]
    max_value: Mapped[float] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    verdict: Mapped[Verdict] = relationship(back_populates="heatmap")


class Region(Base):
    __tablename__ = "regions"
    __table_args__ = (Index("ix_regions_description", "description"),
                      Index("ix_regions_kind", "kind"),
                      Index("ix_regions_operator_kind", "operator_kind"),
                      Index("ix_regions_operator_description", "operator_description"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"), index=True)
    index: Mapped[int]
    mask_rle: Mapped[dict[str, Any]]
    bbox_x: Mapped[int]
    bbox_y: Mapped[int]
    bbox_w: Mapped[int]
    bbox_h: Mapped[int]
    area: Mapped[int]
    peak_score: Mapped[float] = mapped_column(Float)
    mean_score: Mapped[float] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float | None] = mapped_column(Float)
    runner_up: Mapped[str | None] = mapped_column(String(200))
    runner_up_confidence: Mapped[float | None] = mapped_column(Float)
    # True: no pixel passed the region threshold, so this is the hottest area around the
    # map's maximum (low confidence); an anomalous verdict always has a region
    fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the describer's kind key (engine.defects.kind_names; "unclear" when it named none),
    # which describer answered (its identity) and the region's embedding in that
    # describer's space (float32 bytes): regions of one describer that look alike can be
    # grouped for labelling
    kind: Mapped[str | None] = mapped_column(String(64))
    describer: Mapped[str | None] = mapped_column(String(64))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    # the latest description an operator gave this region, the kind key it names and who
    # gave it: shown instead of the describer's answer, which stays beside it (kept in
    # step by pipeline.storage.labels.add_label)
    operator_description: Mapped[str | None] = mapped_column(String(200))
    operator_kind: Mapped[str | None] = mapped_column(String(64))
    operator_by: Mapped[str | None] = mapped_column(String(100))

    verdict: Mapped[Verdict] = relationship(back_populates="regions")


class OperatorLabel(Base):
    __tablename__ = "operator_labels"
    __table_args__ = (CheckConstraint(_one_of("label", OPERATOR_LABELS), name="label"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"), index=True)
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"))
    label: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(String(200))
    # the kind key a description label names (engine.defects.kind_names.kind_key of its
    # text, folded into the product's known kinds)
    kind: Mapped[str | None] = mapped_column(String(64))
    mask_rle: Mapped[dict[str, Any] | None]
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LabelConflict(Base):
    """A label that overturned another author's label on the same verdict (normal vs
    anomalous). Open until someone labels the verdict again (resolved_at)."""

    __tablename__ = "label_conflicts"
    __table_args__ = (Index("ix_label_conflicts_open", "resolved_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"), index=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("operator_labels.id"))
    previous_label_id: Mapped[int] = mapped_column(ForeignKey("operator_labels.id"))
    label: Mapped[str] = mapped_column(String(32))
    author: Mapped[str] = mapped_column(String(100))
    previous_label: Mapped[str] = mapped_column(String(32))
    previous_author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_one_of("status", MODEL_STATUSES), name="status"),
        Index("ix_model_versions_product_status", "product", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(100), unique=True)
    product: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    path: Mapped[str] = mapped_column(String(500))
    threshold: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 hex of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Every token expires: a leaked or forgotten one stops working by itself.
    expires_at: Mapped[datetime]


class AlarmRule(Base):
    """Alarm when a line's or camera's defect rate over the last N minutes exceeds a bound."""

    __tablename__ = "alarm_rules"
    __table_args__ = (
        CheckConstraint(_one_of("scope", ALARM_SCOPES), name="scope"),
        CheckConstraint("max_rate >= 0 AND max_rate < 1", name="max_rate"),
        CheckConstraint("window_minutes >= 1", name="window_minutes"),
        CheckConstraint("min_verdicts >= 1", name="min_verdicts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))  # line or camera id
    max_rate: Mapped[float] = mapped_column(Float)  # alarm when the rate is above this
    window_minutes: Mapped[int] = mapped_column(Integer)
    # Fewer verdicts than this in the window say too little to alarm on.
    min_verdicts: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alarm(Base):
    """One raising of a rule: open until the rate falls back (cleared_at)."""

    __tablename__ = "alarms"
    __table_args__ = (
        # At most one open alarm per rule, whoever evaluates: a rule that stays above
        # its bound is raised (and published) once.
        Index("uq_alarms_open_rule", "rule_id", unique=True,
              postgresql_where=text("cleared_at IS NULL"),
              sqlite_where=text("cleared_at IS NULL")),
        Index("ix_alarms_raised_at", "raised_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alarm_rules.id"))
    raised_at: Mapped[datetime]
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    total: Mapped[int]
    anomalous: Mapped[int]
    rate: Mapped[float] = mapped_column(Float)
    cleared_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    # Set once the event is on the alarms topic; NULL rows are (re)sent by the evaluator.
    published_at: Mapped[datetime | None]

    rule: Mapped[AlarmRule] = relationship()


class User(Base):
    """An operator account of the console: a person signs in with a name and password
    (tokens stay for machines and scripts)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, with its parameters
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
    # Wrong passwords in a row; past a bound the account waits until locked_until.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None]


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random secret, this row its sha256."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Thumbnail(Base):
    """A small picture of a verdict (its overlay) or of one region, rendered once."""

    __tablename__ = "thumbnails"

    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"), primary_key=True)
    variant: Mapped[str] = mapped_column(String(40), primary_key=True)  # "overlay-96", ...
    png: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
