"""Operator labels: what people confirm or correct, and the retraining job's read of it.

Labels are appended, never edited: the history of who said what stays, and the
latest word on a verdict (or on one of its regions) wins when training data is
read. That latest word is also copied onto the verdict (operator_label) and the
region (operator_description, operator_kind) in the same transaction, so every
page and export shows it without reading the history.

A 'normal'/'anomalous' label that overturns another author's latest one on the same
verdict is recorded as a conflict (label_conflicts): it still wins, but the review
queue lists it and the retrain report counts it (`clad retrain --exclude-conflicts`
leaves such frames out). The next decisive label on the verdict by anyone but the
conflict's author settles it (someone has looked again).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from pipeline.storage.models import (
    OPERATOR_LABELS,
    Frame,
    LabelConflict,
    OperatorLabel,
    Verdict,
    utcnow,
)


class LabelError(ValueError):
    """A label that does not fit its verdict (wrong region, missing mask, ...)."""


# (typed description, the product's known kinds) -> the kind key it names, raising
# ValueError when the text names none (engine.defects.kind_names.kind_key; passed in by
# the caller so storage stays free of the engine)
KindOf = Callable[[str, list[str]], str]


@dataclass(frozen=True)
class TrainingRegion:
    mask_rle: dict[str, Any]
    description: str | None
    source: str  # "model" (confirmed as found) or "operator" (drawn by a person)


@dataclass(frozen=True)
class TrainingExample:
    verdict_id: int
    frame_id: uuid.UUID
    product: str
    camera_id: str
    captured_at: datetime
    label: str  # "normal" | "anomalous", as confirmed by an operator
    image_ref: str | None
    has_image_bytes: bool
    regions: list[TrainingRegion] = field(default_factory=list)
    labelled_by: str = ""
    labelled_at: datetime | None = None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_rle(mask_rle: Any, frame_height: int, frame_width: int) -> None:
    """A drawn mask: whole positive sizes no larger than its frame, runs covering it."""
    if not (isinstance(mask_rle, dict) and isinstance(mask_rle.get("size"), list | tuple)
            and len(mask_rle["size"]) == 2 and isinstance(mask_rle.get("counts"), list)
            and all(_count(c) for c in mask_rle["counts"])):
        raise LabelError("mask_rle must be {'size': [height, width], 'counts': [run, ...]}")
    height, width = mask_rle["size"]
    if not (_count(height) and _count(width) and height > 0 and width > 0):
        raise LabelError("mask_rle size must be two whole numbers above 0")
    # A mask may be coarser than its frame (it is resized for training), never larger.
    if height > frame_height or width > frame_width:
        raise LabelError(f"mask_rle size {height}x{width} is larger than the frame "
                         f"({frame_height}x{frame_width})")
    if len(mask_rle["counts"]) > height * width + 1:
        raise LabelError("mask_rle has more runs than the mask has pixels")
    if sum(mask_rle["counts"]) != height * width:
        raise LabelError(f"mask_rle runs cover {sum(mask_rle['counts'])} pixels, "
                         f"the mask has {height * width}")


def add_label(session: Session, *, verdict_id: int, label: str, author: str,
              region_id: int | None = None, description: str | None = None,
              mask_rle: dict[str, Any] | None = None,
              kind_of: KindOf | None = None) -> OperatorLabel:
    """Record one operator label after checking it against its verdict. With `kind_of`,
    a description (a correction or a drawn region's) also records the kind it names."""
    if label not in OPERATOR_LABELS:
        raise LabelError(f"label must be one of {OPERATOR_LABELS}")
    verdict = session.get(Verdict, verdict_id, options=[selectinload(Verdict.regions)])
    if verdict is None:
        raise LookupError(f"verdict {verdict_id} not found")
    if region_id is not None and region_id not in {r.id for r in verdict.regions}:
        # Not found, as GET .../masks.png?region= answers for a region the verdict lacks.
        raise LookupError(f"verdict {verdict_id} has no region {region_id}")
    if label == "description" and (region_id is None or not (description or "").strip()):
        raise LabelError("a description correction needs region_id and description")
    if label == "missing_region":
        if mask_rle is None:
            raise LabelError("a missing region needs mask_rle")
        frame = session.get(Frame, verdict.frame_id)
        assert frame is not None  # verdicts.frame_id is a foreign key
        _check_rle(mask_rle, frame.height, frame.width)
    elif mask_rle is not None:
        raise LabelError("mask_rle is only for label 'missing_region'")
    kind = None
    if kind_of is not None and (description or "").strip():
        region_kind = next((r.kind for r in verdict.regions if r.id == region_id), None)
        try:
            kind = kind_of(description or "", [*product_kinds(session, verdict.product),
                                               *filter(None, [region_kind])])
        except ValueError as exc:
            raise LabelError(str(exc)) from None
    row = OperatorLabel(verdict_id=verdict_id, region_id=region_id, label=label,
                        description=description.strip() if description else None,
                        kind=kind, mask_rle=mask_rle, author=author, created_at=utcnow())
    session.add(row)
    session.flush()
    # The latest word wins: appended labels come in id order, so this one is the latest.
    if label in ("normal", "anomalous"):
        _record_conflict(session, verdict, row)
        verdict.operator_label, verdict.operator_label_by = label, author
    elif label == "description":
        region = next(r for r in verdict.regions if r.id == region_id)
        region.operator_description, region.operator_kind = row.description, kind
        region.operator_by = author
    session.flush()
    return row


def _record_conflict(session: Session, verdict: Verdict, row: OperatorLabel) -> None:
    """Settle the verdict's open conflicts of other authors (someone has looked again), then
    record a new one when `row` overturns another author's latest decisive label."""
    now = row.created_at
    for open_conflict in session.scalars(select(LabelConflict).where(
            LabelConflict.verdict_id == verdict.id, LabelConflict.resolved_at.is_(None),
            LabelConflict.author != row.author)):
        open_conflict.resolved_at = now
    previous = session.scalars(
        select(OperatorLabel).where(OperatorLabel.verdict_id == verdict.id,
                                    OperatorLabel.label.in_(("normal", "anomalous")),
                                    OperatorLabel.id != row.id)
        .order_by(OperatorLabel.id.desc()).limit(1)).one_or_none()
    if previous is None or previous.label == row.label or previous.author == row.author:
        return
    session.add(LabelConflict(verdict_id=verdict.id, label_id=row.id,
                              previous_label_id=previous.id, label=row.label, author=row.author,
                              previous_label=previous.label, previous_author=previous.author,
                              created_at=now))


def open_conflicts(session: Session, *, product: str | None = None, limit: int | None = None
                   ) -> list[tuple[LabelConflict, Verdict]]:
    """Unsettled conflicts, newest first, with their verdicts."""
    stmt = (select(LabelConflict, Verdict).join(Verdict, Verdict.id == LabelConflict.verdict_id)
            .where(LabelConflict.resolved_at.is_(None))
            .order_by(LabelConflict.id.desc()))
    if product is not None:
        stmt = stmt.where(Verdict.product == product)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(c, v) for c, v in session.execute(stmt)]


def count_open_conflicts(session: Session, *, product: str | None = None) -> int:
    stmt = (select(func.count()).select_from(LabelConflict)
            .join(Verdict, Verdict.id == LabelConflict.verdict_id)
            .where(LabelConflict.resolved_at.is_(None)))
    if product is not None:
        stmt = stmt.where(Verdict.product == product)
    return int(session.scalar(stmt) or 0)


def conflicted_verdicts(session: Session, product: str) -> set[int]:
    """Ids of the product's verdicts with an unsettled label conflict."""
    return set(session.scalars(
        select(LabelConflict.verdict_id).join(Verdict, Verdict.id == LabelConflict.verdict_id)
        .where(LabelConflict.resolved_at.is_(None), Verdict.product == product)))


def product_kinds(session: Session, product: str) -> list[str]:
    """The kinds operators have named on this product so far, oldest first: a new
    spelling of one of them ("scratches", "A scratch") folds into it."""
    first_seen = (select(OperatorLabel.kind, OperatorLabel.id)
                  .join(Verdict, Verdict.id == OperatorLabel.verdict_id)
                  .where(Verdict.product == product, OperatorLabel.kind.is_not(None))
                  .order_by(OperatorLabel.id))
    seen: dict[str, None] = {}
    for kind, _id in session.execute(first_seen):
        seen.setdefault(kind)
    return list(seen)


def labels_for(session: Session, verdict_id: int) -> list[OperatorLabel]:
    return list(session.scalars(select(OperatorLabel).where(
        OperatorLabel.verdict_id == verdict_id).order_by(OperatorLabel.id)))


def training_examples(session: Session, *, product: str | None = None,
                      since: datetime | None = None) -> list[TrainingExample]:
    """Operator-confirmed verdicts as training data, oldest label first.

    A verdict counts when someone labelled it: the latest 'normal'/'anomalous'
    decides its class; description corrections or drawn regions alone imply
    anomalous. Anomalous examples carry the model's regions (with corrected
    descriptions) plus the regions operators drew; normal ones carry none.
    """
    # Frame bytes stay in the database here: the job fetches them one at a time.
    stmt = (select(OperatorLabel, Verdict, Frame.image_ref, Frame.image_bytes.is_not(None))
            .join(Verdict, Verdict.id == OperatorLabel.verdict_id)
            .join(Frame, Frame.id == Verdict.frame_id)
            .options(selectinload(Verdict.regions))
            .order_by(OperatorLabel.id))
    if product is not None:
        stmt = stmt.where(Verdict.product == product)
    if since is not None:
        stmt = stmt.where(OperatorLabel.created_at >= since)
    grouped: dict[int, tuple[Verdict, str | None, bool, list[OperatorLabel]]] = {}
    for label, verdict, image_ref, has_bytes in session.execute(stmt):
        grouped.setdefault(verdict.id, (verdict, image_ref, bool(has_bytes), []))[3].append(label)
    return [_example(*group) for group in grouped.values()]


def _example(verdict: Verdict, image_ref: str | None, has_bytes: bool,
             labels: list[OperatorLabel]) -> TrainingExample:
    decisive = [x for x in labels if x.label in ("normal", "anomalous")]
    cls = decisive[-1].label if decisive else "anomalous"
    regions: list[TrainingRegion] = []
    if cls == "anomalous":
        corrected = {x.region_id: x.description for x in labels if x.label == "description"}
        regions = [TrainingRegion(r.mask_rle, corrected.get(r.id, r.description), "model")
                   for r in verdict.regions]
        regions += [TrainingRegion(x.mask_rle, x.description, "operator")
                    for x in labels if x.label == "missing_region" and x.mask_rle is not None]
    last = labels[-1]
    return TrainingExample(
        verdict_id=verdict.id, frame_id=verdict.frame_id, product=verdict.product,
        camera_id=verdict.camera_id, captured_at=verdict.captured_at, label=cls,
        image_ref=image_ref, has_image_bytes=has_bytes,
        regions=regions, labelled_by=last.author, labelled_at=last.created_at)
