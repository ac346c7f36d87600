"""Writes and small reads. The caller owns the session and its transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from pipeline.storage.models import (
    Camera,
    Frame,
    Heatmap,
    ModelVersion,
    ProductionLine,
    Region,
    Verdict,
    utcnow,
)
from pipeline.storage.records import VerdictRecord


def _insert_ignoring_conflicts(session: Session, table: Table, key: str):  # noqa: ANN202
    """INSERT ... ON CONFLICT (key) DO NOTHING, to execute with a list of rows.

    Rows go as executemany parameters, not .values(rows): the statement is then the
    same for every batch and compiled once (SQLAlchemy's cache), where a multi-VALUES
    statement built per batch was compiled per batch, under the GIL, in the worker."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise NotImplementedError(f"idempotent insert not supported on {dialect}")
    return stmt.on_conflict_do_nothing(index_elements=[key])


def write_verdicts(session: Session, records: Sequence[VerdictRecord]) -> int:
    """Store verdicts with heatmaps and regions; frames already decided are skipped.

    Idempotent on frame id, so a batch redelivered after a crash writes nothing
    twice. Returns how many verdicts were new.
    """
    if not records:
        return 0
    lines = {r.line_id: {"id": r.line_id, "name": r.line_id} for r in records}
    cameras = {r.camera_id: {"id": r.camera_id, "line_id": r.line_id, "name": r.camera_id}
               for r in records}
    now = utcnow()
    session.execute(_insert_ignoring_conflicts(session, ProductionLine.__table__, "id"),
                    [dict(row, created_at=now) for row in lines.values()])
    session.execute(_insert_ignoring_conflicts(session, Camera.__table__, "id"),
                    [dict(row, created_at=now) for row in cameras.values()])
    session.execute(_insert_ignoring_conflicts(session, Frame.__table__, "id"), [
        {"id": r.frame_id, "camera_id": r.camera_id, "product": r.product,
         "captured_at": r.captured_at, "received_at": now, "width": r.width,
         "height": r.height, "content_type": r.content_type, "kafka_topic": r.kafka_topic,
         "kafka_partition": r.kafka_partition, "kafka_offset": r.kafka_offset}
        for r in records])
    # Rows skipped as conflicts return nothing; the frame id in each returned row says
    # which verdict is which, so no parameter-order correlation is needed.
    inserted = session.execute(
        _insert_ignoring_conflicts(session, Verdict.__table__, "frame_id")
        .returning(Verdict.id, Verdict.frame_id), [
            {"frame_id": r.frame_id, "camera_id": r.camera_id, "line_id": r.line_id,
             "product": r.product, "captured_at": r.captured_at,
             "model_version": r.model_version, "score": r.score, "threshold": r.threshold,
             "label": r.label, "latency_ms": r.latency_ms, "decided_at": now}
            for r in records]).all()
    by_frame = {r.frame_id: r for r in records}
    heatmaps, regions = [], []
    for verdict_id, frame_id in inserted:
        record = by_frame[frame_id]
        if record.heatmap is not None:
            h = record.heatmap
            heatmaps.append({"verdict_id": verdict_id, "encoding": h.encoding, "width": h.width,
                             "height": h.height, "max_value": h.max_value, "data": h.png})
        for region in record.regions:
            x, y, w, h_ = region.bbox
            regions.append({
                "verdict_id": verdict_id, "index": region.index, "mask_rle": region.mask_rle,
                "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h_, "area": region.area,
                "peak_score": region.peak_score, "mean_score": region.mean_score,
                "description": region.description, "confidence": region.confidence,
                "runner_up": region.runner_up,
                "runner_up_confidence": region.runner_up_confidence,
                "fallback": region.fallback, "kind": region.kind,
                "describer": region.describer, "embedding": region.embedding})
    if heatmaps:
        session.execute(Heatmap.__table__.insert(), heatmaps)
    if regions:
        session.execute(Region.__table__.insert(), regions)
    return len(inserted)


def get_verdict(session: Session, frame_id: uuid.UUID) -> Verdict | None:
    return session.scalars(
        select(Verdict).where(Verdict.frame_id == frame_id)
        .options(selectinload(Verdict.regions), selectinload(Verdict.heatmap))
    ).one_or_none()


def count_verdicts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Verdict)) or 0


def active_model_version(session: Session, product: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.product == product,
                                   ModelVersion.status == "active")
    ).one_or_none()


def register_model_version(session: Session, *, version: str, product: str, path: str,
                           threshold: float | None, metrics: dict[str, Any]) -> ModelVersion:
    row = ModelVersion(version=version, product=product, path=path, threshold=threshold,
                       metrics=metrics, status="candidate")
    session.add(row)
    session.flush()
    return row


def activate_model_version(session: Session, version: str) -> None:
    """Make `version` the one active model of its product; the previous one retires."""
    row = session.scalars(select(ModelVersion).where(ModelVersion.version == version)).one()
    session.execute(update(ModelVersion).where(
        ModelVersion.product == row.product, ModelVersion.status == "active",
        ModelVersion.id != row.id).values(status="retired"))
    row.status = "active"
    row.promoted_at = utcnow()
    session.flush()
