"""Small retraining fixtures: a tiny champion (64 px, 1 shot, 1 epoch) and real magnetic
tile frames stored as verdicts with operator labels, so a retrain takes seconds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from engine.defects import rle
from engine.scoring.builder import ScoringConfig
from engine.training.datasets import split_category
from engine.training.train import TrainConfig
from engine.training.train_run import train_product
from pipeline.settings import ApiSettings
from pipeline.storage.database import transaction
from pipeline.storage.frame_store import store_frame
from pipeline.storage.labels import add_label
from pipeline.storage.records import RegionRecord, VerdictRecord
from pipeline.storage.repository import (
    activate_model_version,
    get_verdict,
    register_model_version,
    write_verdicts,
)
from workers.retraining.job import RetrainOptions

PRODUCT = "magnetic_tile"
TINY = ScoringConfig(input_size=64, aug_shifts=(), aug_rotations=(),
                     w_text_pixel=0.5, w_text_image=0.5)
FAST = RetrainOptions(epochs=2, held_out_share=0.35, export_onnx=False)


def tile_dir(shared_data: Path) -> Path:
    return shared_data / "magnetic-tile" / PRODUCT


def drawn_region(mask_path: Path | None, kind: str) -> tuple[RegionRecord, ...]:
    """The region a ground-truth mask file draws, as the worker would have stored it."""
    if mask_path is None:
        return ()
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
    ys, xs = np.nonzero(mask)
    return (RegionRecord(index=0, mask_rle=rle.encode(mask),
                         bbox=(int(xs.min()), int(ys.min()),
                               int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1),
                         area=int(mask.sum()), peak_score=2.0, mean_score=1.5,
                         description=kind),)


def tiny_champion(tiles: Path, out: Path) -> Path:
    return train_product(tiles.parent, PRODUCT, out, cfg=TrainConfig(epochs=1), scoring=TINY,
                         shots=1, max_images=4, progress=False)


def register_champion(factory: sessionmaker[Session], path: Path) -> str:
    with transaction(factory) as session:
        register_model_version(session, version=path.name, product=PRODUCT, path=str(path),
                               threshold=None, metrics={})
        activate_model_version(session, path.name)
    return path.name


@dataclass(frozen=True)
class Sample:
    path: Path
    mask_path: Path | None
    label: int
    kind: str


def samples(tiles: Path, goods: int, defects: int, offset: int = 0) -> list[Sample]:
    split = split_category(tiles, shots=0)
    good = [s for s in split.evaluated if s.label == 0][offset:offset + goods]
    bad = [s for s in split.evaluated if s.label == 1][::4][offset:offset + defects]
    return [Sample(s.path, s.mask_path, s.label, s.kind) for s in good + bad]


def seed(factory: sessionmaker[Session], chosen: list[Sample], *, author: str = "qa",
         captured_at: datetime | None = None, camera: str = "cam-1",
         transform: object = None) -> list[int]:
    """Each sample as a stored verdict with its image, confirmed by `author`; returns the
    verdict ids. `transform` (image -> image) e.g. brightens a lighting change."""
    # fixed by default: the same held-out groups every run
    captured_at = captured_at or datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    ids = []
    with transaction(factory) as session:
        for i, sample in enumerate(chosen):
            image = cv2.imread(str(sample.path))
            if transform is not None:
                image = transform(image)  # type: ignore[operator]
            data = cv2.imencode(".png", image)[1].tobytes()
            regions = drawn_region(sample.mask_path, sample.kind)
            frame_id = uuid.uuid5(uuid.NAMESPACE_URL,
                                  f"{sample.kind}/{sample.path.name}/{camera}/{captured_at}")
            write_verdicts(session, [VerdictRecord(
                frame_id=frame_id, camera_id=camera, line_id="line-1", product=PRODUCT,
                # a minute apart: each frame is its own held-out group
                captured_at=captured_at + timedelta(minutes=i), width=image.shape[1],
                height=image.shape[0], content_type="image/png", model_version="seed",
                score=0.0, threshold=1.0, label="anomalous" if sample.label else "normal",
                regions=regions)])
            store_frame(session, ApiSettings(frame_storage="database"), frame_id=frame_id,
                        data=data, content_type="image/png")
            verdict = get_verdict(session, frame_id)
            add_label(session, verdict_id=verdict.id,
                      label="anomalous" if sample.label else "normal", author=author)
            ids.append(verdict.id)
    return ids
