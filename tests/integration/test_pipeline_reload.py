"""Hot reload with real model directories: a running worker follows the promoted
version (DB row) between batches, and no frame is lost or scored twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.visual_encoder import VisualEncoder
from pipeline.frames import make_envelope
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.settings import KafkaSettings
from pipeline.storage.models import Verdict
from pipeline.storage.repository import activate_model_version, register_model_version
from tests.integration.pipeline_support import (
    kafka_settings,
    png_frame,
    start_worker,
    stop_worker,
    verdicts_by_frame,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCT = "widget"
CONFIG = ScoringConfig(input_size=64, aug_shifts=(), aug_rotations=(), sigma=1.0)


def _save_version(model_dir: Path, version: str, threshold: float) -> Path:
    """A real saved model (engine.scoring.artifacts layout) from two small synthetic parts."""
    refs = []
    for seed in (1, 2):
        img = cv2.imdecode(np.frombuffer(png_frame(seed), np.uint8), cv2.IMREAD_COLOR)
        refs.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    encoder = VisualEncoder(CONFIG.backbone, CONFIG.stages, pretrained=False)
    runtime = build_runtime(refs, CONFIG, encoder=encoder)
    meta = ModelMetadata(category=PRODUCT, scoring=CONFIG, version=version,
                         threshold=Threshold(threshold, "false_alarm_rate", 2, 0))
    return save_model(runtime, model_dir, meta)


def _promote(engine: Engine, version: str, path: Path, threshold: float) -> None:
    with Session(engine) as session, session.begin():
        register_model_version(session, version=version, product=PRODUCT, path=str(path),
                               threshold=threshold, metrics={})
        activate_model_version(session, version)


def _publish(kafka: KafkaSettings, start: int, count: int) -> list[uuid.UUID]:
    ensure_topics(kafka)
    ids = []
    with FramePublisher(kafka) as publisher:
        for i in range(start, start + count):
            envelope = make_envelope(png_frame(i, defect=i % 4 == 0), camera_id=f"cam-{i % 2}",
                                     line_id="line-1", product=PRODUCT)
            publisher.publish(envelope)
            ids.append(envelope.header.frame_id)
    assert publisher.failed == 0
    return ids


def _versions(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(Verdict.frame_id, Verdict.model_version)
                                  .where(Verdict.frame_id.in_(ids))).all()
    return dict(rows)


def test_running_worker_switches_to_the_promoted_version_without_losing_a_frame(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    path_a = _save_version(model_dir, "A", 1.5)
    _promote(clean_db, "A", path_a, 1.5)
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    env = worker_env(kafka, postgres_url, redis_url, CLAD_MODEL_DIR=str(model_dir),
                     CLAD_MODEL_CHECK_INTERVAL_S="0.5", CLAD_BATCH_SIZE="4")
    del env["CLAD_ENGINE_FACTORY"]  # the real model directories, as in production
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        before = _publish(kafka, 0, 24)
        wait_until(lambda: len(_versions(clean_db, before)) == 24, timeout_s=180,
                   what="verdicts of model A", alive=alive)
        path_b = _save_version(model_dir, "B", 1.2)
        _promote(clean_db, "B", path_b, 1.2)
        during = _publish(kafka, 24, 24)  # in flight while the worker swaps engines
        wait_until(lambda: "model A -> B" in log_path.read_text(), timeout_s=60,
                   what="the worker to load model B", alive=alive)
        after = _publish(kafka, 48, 24)
        ids = before + during + after
        wait_until(lambda: len(_versions(clean_db, ids)) == len(ids), timeout_s=180,
                   what="every frame's verdict", alive=alive)
    finally:
        code = stop_worker(worker)
    versions = _versions(clean_db, ids)
    assert set(versions[f] for f in before) == {"A"}
    assert set(versions[f] for f in during) <= {"A", "B"}
    assert set(versions[f] for f in after) == {"B"}
    by_frame = verdicts_by_frame(clean_db)
    assert set(by_frame) == set(ids) and set(by_frame.values()) == {1}
    assert code == 0
