"""What operators have named on a product: the describer's training data.

Every region's latest description label (a correction, or a describer answer an
operator confirmed: both are 'description' labels) with the region's own mask, and
every region an operator drew ('missing_region') with the words given for it. A
verdict whose latest normal/anomalous word is 'normal' contributes nothing: its
regions are not defects. Kinds are the keys recorded with each label
(engine.defects.kind_names, folded when the label was added); a label recorded
before kinds existed carries None and the reader folds its text itself, so storage
stays free of the engine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage.models import OperatorLabel, Region, Verdict

DESCRIBING = ("description", "missing_region")
DECISIVE = ("normal", "anomalous")


@dataclass(frozen=True)
class DescribedRegion:
    """One region an operator named: its mask, words, kind key and frame."""

    frame_id: uuid.UUID
    verdict_id: int
    region_id: int | None  # None: a region the operator drew (missing_region)
    mask_rle: dict[str, Any]  # the found region's (map coordinates) or the drawn one
    description: str
    kind: str | None  # the key recorded with the label; None: recorded before kinds
    author: str
    labelled_at: datetime

    @property
    def drawn(self) -> bool:
        return self.region_id is None


def description_labels(session: Session, product: str) -> list[DescribedRegion]:
    """The product's named regions, oldest label first (one per found region: its
    latest description; one per drawn region)."""
    stmt = (select(OperatorLabel, Verdict.frame_id)
            .join(Verdict, Verdict.id == OperatorLabel.verdict_id)
            .where(Verdict.product == product,
                   OperatorLabel.label.in_((*DESCRIBING, *DECISIVE)))
            .order_by(OperatorLabel.id))
    latest_class: dict[int, str] = {}
    latest_word: dict[int, tuple[OperatorLabel, uuid.UUID]] = {}  # region id -> label
    drawn: list[tuple[OperatorLabel, uuid.UUID]] = []
    for label, frame_id in session.execute(stmt):
        if label.label in DECISIVE:
            latest_class[label.verdict_id] = label.label
        elif not (label.description or "").strip():
            continue  # a drawn region without words teaches the scoring model only
        elif label.label == "description" and label.region_id is not None:
            latest_word.pop(label.region_id, None)  # re-inserted: dict order = label order
            latest_word[label.region_id] = (label, frame_id)
        elif label.label == "missing_region" and label.mask_rle is not None:
            drawn.append((label, frame_id))
    masks: dict[int, dict[str, Any]] = {}
    if latest_word:
        rows = session.execute(select(Region.id, Region.mask_rle).where(
            Region.id.in_(list(latest_word)))).all()
        masks = {region_id: mask for region_id, mask in rows}
    named = [(label, frame_id, masks[region_id])
             for region_id, (label, frame_id) in latest_word.items() if region_id in masks]
    named += [(label, frame_id, label.mask_rle) for label, frame_id in drawn]
    named.sort(key=lambda item: item[0].id)
    return [DescribedRegion(frame_id=frame_id, verdict_id=label.verdict_id,
                            region_id=label.region_id if label.label == "description" else None,
                            mask_rle=mask, description=(label.description or "").strip(),
                            kind=label.kind, author=label.author,
                            labelled_at=label.created_at)
            for label, frame_id, mask in named
            if latest_class.get(label.verdict_id) != "normal"]
