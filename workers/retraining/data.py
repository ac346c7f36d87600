"""The retraining job's data: operator-confirmed frames from the store, split
into a training part and a frozen held-out evaluation part.

Held-out membership is decided per group, not per frame: frames captured within the
same block of `group_seconds` (any camera of the product) form one group, so the
near-identical shots of one part (two cameras on it, a burst of one camera) all land
on the same side and cannot flatter the held-out figures. Membership is a hash of
the group (the product and the block's start), so a frame held out once is held out
in every later run and never trained on.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.orm import Session

from engine.defects import rle
from pipeline.storage.frame_store import load_frame
from pipeline.storage.labels import TrainingExample, training_examples
from pipeline.storage.models import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfirmedFrame:
    frame_id: uuid.UUID
    label: str  # "normal" | "anomalous"
    image: np.ndarray  # uint8 HWC RGB
    mask: np.ndarray | None  # uint8 HW union of the confirmed regions (anomalous only)
    captured_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    camera_id: str = ""


@dataclass
class RetrainData:
    product: str
    train: list[ConfirmedFrame] = field(default_factory=list)
    held_out: list[ConfirmedFrame] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        def n(part: list[ConfirmedFrame], label: str) -> int:
            return sum(f.label == label for f in part)

        return {"train_normal": n(self.train, "normal"),
                "train_anomalous": n(self.train, "anomalous"),
                "held_out_normal": n(self.held_out, "normal"),
                "held_out_anomalous": n(self.held_out, "anomalous"),
                **{f"skipped_{k}": v for k, v in self.skipped.items()}}


def is_held_out(frame_id: uuid.UUID, share: float, salt: bytes = b"clad-held-out") -> bool:
    """Deterministic membership of a `share` of frames; another salt, another split."""
    return _in_share(frame_id.bytes, share, salt)


def _in_share(key: bytes, share: float, salt: bytes) -> bool:
    digest = hashlib.sha256(salt + b":" + key).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def held_out_group(product: str, captured_at: datetime, group_seconds: float) -> str:
    """The group a frame is split with: its product and the block of time it was captured
    in (every camera: two cameras on one part see it at the same moment)."""
    when = captured_at if captured_at.tzinfo else captured_at.replace(tzinfo=UTC)
    block = int(when.timestamp() // group_seconds) if group_seconds > 0 else 0
    return f"{product}:{block}"


def group_is_held_out(group: str, share: float, salt: bytes = b"clad-held-out-group") -> bool:
    """Deterministic membership of a `share` of groups."""
    return _in_share(group.encode(), share, salt)


def _decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _union_mask(example: TrainingExample, shape: tuple[int, int]) -> np.ndarray | None:
    masks = []
    for region in example.regions:
        mask = rle.decode(region.mask_rle)
        if mask.shape != shape:
            mask = cv2.resize(mask.astype(np.uint8), shape[::-1],
                              interpolation=cv2.INTER_NEAREST) > 0
        masks.append(mask)
    if not masks:
        return None
    return (np.logical_or.reduce(masks) * 255).astype(np.uint8)


def collect(session: Session, product: str, *, frame_dir: Path,
            held_out_share: float = 0.3, group_seconds: float = 10.0,
            examples: Sequence[TrainingExample] | None = None) -> RetrainData:
    """Every confirmed frame of `product` (or of `examples`, already read) whose image is
    still stored, decoded."""
    data = RetrainData(product)
    if examples is None:
        examples = training_examples(session, product=product)
    for example in examples:
        frame = session.get(Frame, example.frame_id)
        payload = load_frame(frame, frame_dir) if frame is not None else None
        image = _decode(payload) if payload else None
        if image is None:
            reason = "no_image" if payload is None else "undecodable"
            data.skipped[reason] = data.skipped.get(reason, 0) + 1
            continue
        mask = _union_mask(example, image.shape[:2]) if example.label == "anomalous" else None
        captured = example.captured_at
        if captured.tzinfo is None:  # SQLite returns naive UTC
            captured = captured.replace(tzinfo=UTC)
        confirmed = ConfirmedFrame(example.frame_id, example.label, image, mask,
                                   captured, example.camera_id)
        group = held_out_group(product, captured, group_seconds)
        part = data.held_out if group_is_held_out(group, held_out_share) else data.train
        part.append(confirmed)
    log.info("product %s: %s", product, data.counts())
    return data
