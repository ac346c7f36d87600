"""A shift on two lines, fully known, for the console's shift tests (API and browser).

Two products on very different score scales (bottle: threshold 0.5; grid: threshold
20), three cameras, a verdict every 5 minutes per camera for 4 hours from T0, a defect
spike on line-1 in the last hour. Anomalous regions carry kind keys (eleven kinds, so a
chart must group the tail as "other"), the default describer's kind of text (a fact
description for "unclear", a group answer "a scratch or a cut") and embeddings: the
default describer's features are not unit-norm, and fourteen unclear bottle regions
look alike (one base vector plus small noise) while the rest are far apart.
`SHIFT` says what each verdict is, so tests compute their expectations with plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select, text, update

from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Frame, Region
from pipeline.storage.repository import write_verdicts
from pipeline.storage.tokens import create_token
from pipeline.storage.users import create_user
from tests.integration.operator_data import Spec, blob_frame, record

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=4)
CAMERAS = {"cam-a": ("line-1", "bottle"), "cam-b": ("line-1", "bottle"),
           "cam-c": ("line-2", "grid")}
THRESHOLD = {"bottle": 0.5, "grid": 20.0}
DESCRIBER = "default-0123abcd"  # the default describer's identity (features, not unit-norm)
DIM = 31
PASSWORD = "shift-password-1"
# kind key -> the describer's text for it
TEXTS = {"scratch": "a scratch", "crack": "a crack", "contamination": "contamination",
         "hole": "a hole", "dent": "a dent", "stain": "a stain", "bent_wire": "a bent wire",
         "broken": "broken", "glue": "glue", "thread": "a thread", "fold": "a fold"}
UNCLEAR_TEXT = "unnamed: a dark thin line, 40 px long, at the left edge"
GROUP_TEXT = "a scratch or a cut"  # a group answer: kind "scratch", not one sure kind
ALIKE = 14  # unclear bottle regions that look alike


@dataclass(frozen=True)
class ShiftRegion:
    kind: str
    text: str
    describer: str
    vector: tuple[float, ...]


@dataclass(frozen=True)
class ShiftVerdict:
    index: int
    camera_id: str
    line_id: str
    product: str
    captured_at: datetime
    score: float
    threshold: float
    label: str
    regions: tuple[ShiftRegion, ...]

    @property
    def relative(self) -> float:
        return self.score / self.threshold


def _vector(rng: np.random.Generator, base: np.ndarray | None) -> tuple[float, ...]:
    # Features on scales of their own (areas in the hundreds, ratios near 1): not unit-norm.
    scale = np.geomspace(0.05, 400.0, DIM)
    v = (base + rng.normal(0, 0.02, DIM)) if base is not None else rng.normal(0, 1, DIM)
    return tuple(float(x) for x in v * scale + scale)


def _shift() -> list[ShiftVerdict]:
    rng = np.random.default_rng(32)
    base = rng.normal(0, 1, DIM)
    kinds = list(TEXTS)
    out: list[ShiftVerdict] = []
    alike = 0
    for step in range(48):
        for c, camera in enumerate(sorted(CAMERAS)):
            line, product = CAMERAS[camera]
            i = len(out)
            spike = line == "line-1" and step >= 36
            anomalous = spike or step % 4 == c
            ratio = (1.2 + 0.05 * (step % 7)) if anomalous else 0.3 + 0.1 * ((step + c) % 6)
            if step % 12 == 5:
                ratio = 0.98 if not anomalous else 1.02  # close calls for the review queue
            threshold = THRESHOLD[product]
            regions: tuple[ShiftRegion, ...] = ()
            if anomalous:
                kind = kinds[(step + 3 * c) % len(kinds)]
                if product == "bottle" and step % 3 == 0 and alike < ALIKE:
                    alike += 1
                    regions = (ShiftRegion("unclear", UNCLEAR_TEXT, DESCRIBER,
                                           _vector(rng, base)),)
                elif product == "bottle" and step % 5 == 1:
                    regions = (ShiftRegion("scratch", GROUP_TEXT, DESCRIBER, _vector(rng, None)),)
                else:
                    regions = (ShiftRegion(kind, TEXTS[kind], DESCRIBER, _vector(rng, None)),)
            out.append(ShiftVerdict(i, camera, line, product, T0 + timedelta(minutes=5 * step),
                                    round(ratio * threshold, 6), threshold,
                                    "anomalous" if ratio >= 1 else "normal", regions))
    assert alike == ALIKE
    return out


SHIFT = _shift()


@dataclass
class SeededShift:
    verdict_ids: dict[int, int]  # SHIFT index -> verdict id
    region_ids: dict[int, list[int]]  # SHIFT index -> its region ids, in order
    tokens: dict[str, str]  # role -> secret
    users: dict[str, str]  # role -> username (password: PASSWORD)


def seed_shift(engine: Engine, frame_image: Path | None = None) -> SeededShift:
    """Write SHIFT (frames kept in the database), a token per role and an account for a
    viewer and an operator."""
    frame_png, heat, mask = blob_frame(96, 128)
    if frame_image is not None:
        from tests.integration.operator_data import _real_frame

        frame_png, heat, mask = _real_frame(frame_image)
    records = []
    for s in SHIFT:
        spec = Spec(s.index, s.camera_id, s.line_id, s.product, s.captured_at, s.score,
                    s.label, tuple(r.text for r in s.regions))
        base = record(spec, heat, mask)
        regions = tuple(
            replace(r, kind=sr.kind, describer=sr.describer,
                    embedding=np.asarray(sr.vector, np.float32).tobytes(),
                    confidence=0.3 if sr.kind == "unclear" else 0.8)
            for r, sr in zip(base.regions, s.regions, strict=True))
        records.append(replace(base, threshold=s.threshold, model_version=f"{s.product}-v3",
                               regions=regions))
    with transaction(make_session_factory(engine)) as session:
        write_verdicts(session, records)
        for r in records:
            session.execute(update(Frame).where(Frame.id == r.frame_id)
                            .values(image_bytes=frame_png))
        tokens = {role: create_token(session, name=f"{role}-bot", role=role,
                                     expires_in=timedelta(days=90))[1]
                  for role in ("viewer", "operator", "admin")}
        users = {role: create_user(session, username=f"{role}-ann", password=PASSWORD,
                                   role=role).username for role in ("viewer", "operator")}
        ids = dict(session.execute(text("SELECT frame_id, id FROM verdicts")).all())
        regions = {i: list(session.scalars(select(Region.id).where(
            Region.verdict_id == ids[r.frame_id]).order_by(Region.index)))
            for i, r in enumerate(records)}
    return SeededShift({i: ids[r.frame_id] for i, r in enumerate(records)}, regions, tokens,
                       users)


def alike_indices() -> list[int]:
    """SHIFT indices of the fourteen alike unclear bottle regions, oldest first."""
    return [s.index for s in SHIFT if s.regions and s.regions[0].kind == "unclear"]
