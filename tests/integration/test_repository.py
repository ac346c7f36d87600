import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.storage.database import make_engine, make_session_factory, transaction
from pipeline.storage.migrate import upgrade
from pipeline.storage.models import Region
from pipeline.storage.records import HeatmapRecord, RegionRecord, VerdictRecord
from pipeline.storage.repository import (
    activate_model_version,
    active_model_version,
    count_verdicts,
    get_verdict,
    register_model_version,
    write_verdicts,
)

pytestmark = pytest.mark.integration


def make_record(score: float = 0.9, regions: int = 2, camera: str = "cam-1") -> VerdictRecord:
    return VerdictRecord(
        frame_id=uuid.uuid4(), camera_id=camera, line_id="line-3", product="bottle",
        captured_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC), width=64, height=48,
        content_type="image/png", model_version="bottle-v1", score=score, threshold=0.5,
        label="anomalous" if score >= 0.5 else "normal", latency_ms=12.5,
        kafka_topic="frames", kafka_partition=1, kafka_offset=42,
        heatmap=HeatmapRecord(png=b"\x89PNG fake", width=64, height=48, max_value=1.7),
        regions=tuple(RegionRecord(index=i, mask_rle={"size": [48, 64], "counts": [0, 5]},
                                   bbox=(i, i, 5, 1), area=5, peak_score=1.5, mean_score=1.1,
                                   description="a scratch on the bottle", confidence=0.8)
                      for i in range(regions)))


def test_write_is_idempotent_on_frame_id(db_session: Session) -> None:
    records = [make_record(), make_record(score=0.1, regions=0)]
    assert write_verdicts(db_session, records) == 2
    # A redelivered batch (same frames, one new) writes only the new one.
    assert write_verdicts(db_session, [*records, make_record(camera="cam-2", regions=0)]) == 1
    assert count_verdicts(db_session) == 3
    assert db_session.scalar(select(func.count()).select_from(Region)) == 2


def test_verdict_reads_back_with_heatmap_and_regions(db_session: Session) -> None:
    record = make_record(regions=3)
    write_verdicts(db_session, [record])
    verdict = get_verdict(db_session, record.frame_id)
    assert verdict is not None
    assert (verdict.label, verdict.camera_id, verdict.line_id) == ("anomalous", "cam-1", "line-3")
    assert verdict.score == pytest.approx(0.9)
    assert verdict.heatmap is not None and verdict.heatmap.max_value == pytest.approx(1.7)
    assert [r.index for r in verdict.regions] == [0, 1, 2]
    assert verdict.regions[1].bbox_x == 1 and verdict.regions[0].mask_rle["counts"] == [0, 5]


def test_fallback_flag_of_a_region_reads_back(db_session: Session) -> None:
    cut = make_record(regions=1)
    plain = make_record(regions=1)
    hottest = replace(plain, regions=(replace(plain.regions[0], fallback=True),))
    write_verdicts(db_session, [cut, hottest])
    assert [r.fallback for r in get_verdict(db_session, cut.frame_id).regions] == [False]
    assert [r.fallback for r in get_verdict(db_session, hottest.frame_id).regions] == [True]


def test_rolled_back_between_tests(db_session: Session) -> None:
    assert count_verdicts(db_session) == 0


def test_one_active_model_per_product(db_session: Session) -> None:
    for version in ("bottle-v1", "bottle-v2"):
        register_model_version(db_session, version=version, product="bottle",
                               path=f"/m/{version}", threshold=0.5, metrics={"auroc": 0.9})
    activate_model_version(db_session, "bottle-v1")
    activate_model_version(db_session, "bottle-v2")
    active = active_model_version(db_session, "bottle")
    assert active is not None and active.version == "bottle-v2"
    assert active.promoted_at is not None


def test_sqlite_write_is_idempotent_too(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    records = [make_record(), make_record(regions=0)]
    with transaction(factory) as session:
        assert write_verdicts(session, records) == 2
    with transaction(factory) as session:
        assert write_verdicts(session, records) == 0
        assert count_verdicts(session) == 2
    with factory() as session:
        verdict = get_verdict(session, records[0].frame_id)
        assert verdict is not None and len(verdict.regions) == 2
