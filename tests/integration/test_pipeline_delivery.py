"""Delivery guarantees with real worker processes, broker and Postgres."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, select

from pipeline.storage.models import Frame
from tests.integration.pipeline_support import (
    kafka_settings,
    publish,
    start_worker,
    stop_worker,
    verdict_count,
    verdicts_by_frame,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(*processes):  # noqa: ANN001, ANN202
    def check() -> None:
        for p in processes:
            assert p.poll() is None, f"worker exited with {p.returncode}"
    return check


def test_two_workers_score_every_frame_exactly_once(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    env = worker_env(kafka, postgres_url, redis_url)
    ids = publish(kafka, 2000)
    workers = [start_worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        wait_until(lambda: verdict_count(clean_db) >= 2000, timeout_s=180,
                   what="2,000 verdicts", alive=_alive(*workers))
    finally:
        codes = [stop_worker(w) for w in workers]
    by_frame = verdicts_by_frame(clean_db)
    assert len(by_frame) == 2000
    assert set(by_frame) == set(ids)
    assert set(by_frame.values()) == {1}
    assert codes == [0, 0], "SIGTERM must end a worker cleanly"
    # The original bytes are kept with the verdict (frame_storage "database" by default)
    # for the operator console and retraining.
    with clean_db.connect() as connection:
        stored = dict(connection.execute(select(Frame.id, Frame.image_bytes)).all())
    assert set(stored) == set(ids)
    assert all(data is not None for data in stored.values())
    sample = cv2.imdecode(np.frombuffer(stored[ids[0]], np.uint8), cv2.IMREAD_COLOR)
    assert sample is not None and sample.shape == (64, 64, 3)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert all("batches" in log for log in logs)


def test_worker_killed_mid_stream_then_restarted_loses_and_duplicates_nothing(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    env = worker_env(kafka, postgres_url, redis_url)
    ids = publish(kafka, 1000)
    first = start_worker(env, tmp_path / "first.log")
    try:
        wait_until(lambda: verdict_count(clean_db) >= 200, timeout_s=120,
                   what="the first 200 verdicts", alive=_alive(first))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = verdict_count(clean_db)
    assert killed_at < 1000, "the kill must land mid-stream for this test to mean anything"
    second = start_worker(env, tmp_path / "second.log")
    try:
        wait_until(lambda: verdict_count(clean_db) >= 1000, timeout_s=120,
                   what="1,000 verdicts after the restart", alive=_alive(second))
    finally:
        stop_worker(second)
    by_frame = verdicts_by_frame(clean_db)
    assert set(by_frame) == set(ids)
    assert set(by_frame.values()) == {1}
