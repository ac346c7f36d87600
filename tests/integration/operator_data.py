"""A small, fully known store for the history, API and console tests.

`SPEC` says what each verdict is; tests compute expectations from it with plain
Python, so each filter is checked against an independent answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import Engine, text, update

from engine.defects import rle
from pipeline.heatmap_codec import encode_heatmap
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Base, Frame
from pipeline.storage.records import HeatmapRecord, RegionRecord, VerdictRecord
from pipeline.storage.repository import (
    activate_model_version,
    register_model_version,
    write_verdicts,
)
from pipeline.storage.tokens import create_token

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CAMERAS = {"cam-a": ("line-1", "bottle"), "cam-b": ("line-1", "bottle"),
           "cam-c": ("line-2", "screw")}


@dataclass(frozen=True)
class Spec:
    index: int
    camera_id: str
    line_id: str
    product: str
    captured_at: datetime
    score: float
    label: str
    defects: tuple[str, ...]


def _spec(i: int) -> Spec:
    camera = sorted(CAMERAS)[i % 3]
    line, product = CAMERAS[camera]
    score = round(i / 24, 4)
    label = "anomalous" if score >= 0.5 else "normal"
    defects: tuple[str, ...] = ()
    if label == "anomalous":
        defects = ("scratch on the neck",) if i % 2 == 0 else ("crack in the body",)
        if i % 4 == 0:
            defects += ("contamination",)
    return Spec(i, camera, line, product, T0 + timedelta(minutes=10 * i), score, label,
                defects)


# 24 verdicts, one every 10 minutes from 08:00 to 11:50 UTC.
SPEC = [_spec(i) for i in range(24)]


@dataclass
class Seeded:
    verdict_ids: dict[int, int]  # spec index -> verdict id
    tokens: dict[str, str]  # role -> secret


def blob_frame(height: int = 48, width: int = 64) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A gradient frame (PNG bytes), a heatmap with one blob, and the blob's mask."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.stack([xx * 4 % 256, yy * 5 % 256, np.full_like(xx, 120)], -1).astype(np.uint8)
    heat = np.exp(-((xx - 40) ** 2 + (yy - 20) ** 2) / 40.0).astype(np.float32)
    ok, png = cv2.imencode(".png", frame)
    assert ok
    return png.tobytes(), heat, heat > 0.5


def record(spec: Spec, heat: np.ndarray, mask: np.ndarray) -> VerdictRecord:
    height, width = heat.shape
    png, max_value = encode_heatmap(heat)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    mask_rle = rle.encode(mask)
    regions = tuple(RegionRecord(index=k, mask_rle=mask_rle, bbox=bbox, area=int(mask.sum()),
                                 peak_score=1.0, mean_score=0.7, description=d, confidence=0.8)
                    for k, d in enumerate(spec.defects))
    return VerdictRecord(
        frame_id=uuid.uuid4(), camera_id=spec.camera_id, line_id=spec.line_id,
        product=spec.product, captured_at=spec.captured_at, width=width, height=height,
        content_type="image/png", model_version=f"{spec.product}-v1", score=spec.score,
        threshold=0.5, label=spec.label,
        heatmap=HeatmapRecord(png=png, width=width, height=height, max_value=max_value),
        regions=regions)


def seed(engine: Engine, frame_image: Path | None = None) -> Seeded:
    """Write SPEC (frames kept in the database), three tokens and three model versions."""
    frame_png, heat, mask = blob_frame()
    if frame_image is not None:
        frame_png, heat, mask = _real_frame(frame_image)
    records = [record(s, heat, mask) for s in SPEC]
    with transaction(make_session_factory(engine)) as session:
        write_verdicts(session, records)
        for r in records:
            session.execute(update(Frame).where(Frame.id == r.frame_id)
                            .values(image_bytes=frame_png))
        tokens = {role: create_token(session, name=f"{role}-tester", role=role,
                                           expires_in=timedelta(days=90))[1]
                  for role in ("viewer", "operator", "admin")}
        for version, status in (("bottle-v1", "active"), ("bottle-v2", "candidate"),
                                ("bottle-v0", "rejected")):
            row = register_model_version(session, version=version, product="bottle",
                                         path=f"models/{version}", threshold=0.5,
                                         metrics={"image_auroc": 0.9})
            if status == "active":
                activate_model_version(session, version)
            row.status = status
        ids = dict(session.execute(text(
            "SELECT v.frame_id, v.id FROM verdicts v")).all())
    return Seeded({i: ids[r.frame_id] for i, r in enumerate(records)}, tokens)


def _real_frame(path: Path, size: int = 256) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A real defect image with its ground-truth mask (blurred into a heatmap)."""
    image = cv2.resize(cv2.imread(str(path)), (size, size), interpolation=cv2.INTER_AREA)
    gt = path.parents[2] / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
    mask = cv2.resize(cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE), (size, size)) > 127
    heat = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 6) * 1.6
    ok, png = cv2.imencode(".png", image)
    assert ok
    return png.tobytes(), heat, heat > 0.5


def truncate(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
