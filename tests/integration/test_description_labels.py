"""The describer's training data read from the store: each region's latest word, the
regions operators drew with their words, nothing from verdicts judged normal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy.orm import Session

from engine.defects import rle
from engine.defects.kind_names import kind_key
from pipeline.storage.description_labels import description_labels
from pipeline.storage.labels import add_label
from pipeline.storage.records import RegionRecord, VerdictRecord
from pipeline.storage.repository import get_verdict, write_verdicts

pytestmark = pytest.mark.integration


def _mask(x: int) -> dict:
    m = np.zeros((16, 16), bool)
    m[2:6, x:x + 3] = True
    return rle.encode(m)


def _verdict(session: Session, product: str, n_regions: int) -> tuple[int, list[int]]:
    frame_id = uuid.uuid4()
    regions = tuple(RegionRecord(index=i, mask_rle=_mask(i * 4), bbox=(i * 4, 2, 3, 4), area=12,
                                 peak_score=2.0, mean_score=1.5, description="unclear defect",
                                 kind="unclear") for i in range(n_regions))
    write_verdicts(session, [VerdictRecord(
        frame_id=frame_id, camera_id="cam-1", line_id="line-1", product=product,
        captured_at=datetime.now(UTC), width=16, height=16, content_type="image/png",
        model_version="m-1", score=2.0, threshold=1.0, label="anomalous", regions=regions)])
    verdict = get_verdict(session, frame_id)
    return verdict.id, [r.id for r in sorted(verdict.regions, key=lambda r: r.index)]


def _fold(text: str, known: list[str]) -> str:
    return kind_key(text, known)


def test_latest_word_per_region_drawn_regions_and_no_normal_verdicts(
        db_session: Session) -> None:
    v1, (r1, r2) = _verdict(db_session, "widget", 2)
    v2, (r3,) = _verdict(db_session, "widget", 1)
    v3, _ = _verdict(db_session, "widget", 0)
    other, (r5,) = _verdict(db_session, "gadget", 1)
    add_label(db_session, verdict_id=v1, label="description", region_id=r2,
              description="a scratch", author="ann", kind_of=_fold)  # a confirmed answer
    add_label(db_session, verdict_id=v1, label="description", region_id=r1,
              description="a hole", author="ann", kind_of=_fold)
    add_label(db_session, verdict_id=v1, label="description", region_id=r1,
              description="Scratches ", author="bob", kind_of=_fold)  # the latest word wins
    drawn = _mask(10)
    add_label(db_session, verdict_id=v3, label="missing_region", mask_rle=drawn,
              description="a dent", author="ann", kind_of=_fold)
    add_label(db_session, verdict_id=v3, label="missing_region", mask_rle=_mask(0),
              author="ann")  # no words: nothing to teach the describer
    add_label(db_session, verdict_id=v2, label="description", region_id=r3,
              description="a crack", author="ann", kind_of=_fold)
    add_label(db_session, verdict_id=v2, label="normal", author="bob")  # not a defect after all
    add_label(db_session, verdict_id=other, label="description", region_id=r5,
              description="a crack", author="ann", kind_of=_fold)
    named = description_labels(db_session, "widget")
    assert [(n.region_id, n.description, n.kind, n.author) for n in named] == [
        (r2, "a scratch", "scratch", "ann"),
        (r1, "Scratches", "scratch", "bob"),
        (None, "a dent", "dent", "ann"),
    ]
    assert named[0].mask_rle == _mask(4) and named[1].mask_rle == _mask(0)
    assert named[2].mask_rle == drawn and named[2].drawn and not named[0].drawn
    assert {n.verdict_id for n in named} == {v1, v3}
    assert [n.region_id for n in description_labels(db_session, "gadget")] == [r5]
    # judged anomalous again: its region's word counts again
    add_label(db_session, verdict_id=v2, label="anomalous", author="cy")
    assert r3 in {n.region_id for n in description_labels(db_session, "widget")}
