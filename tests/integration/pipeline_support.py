"""Shared pieces of the pipeline tests: a deterministic engine, frames, worker processes.

Worker subprocesses load `stats_engines` through CLAD_ENGINE_FACTORY, so delivery
guarantees are tested without the CLAD model's CPU cost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import Engine, func, select

from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.settings import KafkaSettings, Settings
from pipeline.storage.models import Verdict

REPO = Path(__file__).resolve().parents[2]
PRODUCTS = ("widget", "gadget")


class StatsEngine:
    """Anomaly = brightness: the map is the mean channel value / 255, score its max."""

    input_size = 32
    threshold = 0.8
    version = "stats-1"

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = frames.astype(np.float32).mean(axis=-1) / 255.0
        return maps.reshape(len(frames), -1).max(axis=1), maps


def stats_engines(_settings: Settings) -> dict[str, StatsEngine]:
    return {p: StatsEngine() for p in PRODUCTS}


class HangingEngine(StatsEngine):
    """An inference that never returns (a GPU call that hangs)."""

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        threading.Event().wait()
        raise AssertionError("unreachable")


def hanging_engines(_settings: Settings) -> dict[str, StatsEngine]:
    return {p: HangingEngine() for p in PRODUCTS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_frame(seed: int, size: int = 64, defect: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (size, size, 3), dtype=np.uint8)
    if defect:
        cv2.circle(image, (size // 2, size // 2), size // 6, (255, 255, 255), -1)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def kafka_settings(bootstrap: str, tag: str, **extra: object) -> KafkaSettings:
    """Topics and group unique per test: tests share one broker for the session."""
    return KafkaSettings(bootstrap_servers=bootstrap, topic_frames=f"frames-{tag}",
                         topic_verdicts=f"verdicts-{tag}", topic_dlq=f"frames.dlq-{tag}",
                         consumer_group=f"workers-{tag}", topic_partitions=4, **extra)


def worker_env(kafka: KafkaSettings, database_url: str, redis_url: str | None,
               **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAD_")}
    env.update({
        "CLAD_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CLAD_TOPIC_FRAMES": kafka.topic_frames, "CLAD_TOPIC_VERDICTS": kafka.topic_verdicts,
        "CLAD_TOPIC_DLQ": kafka.topic_dlq, "CLAD_CONSUMER_GROUP": kafka.consumer_group,
        "CLAD_MAX_FRAME_BYTES": str(kafka.max_frame_bytes),
        "CLAD_DATABASE_URL": database_url,
        "CLAD_ENGINE_FACTORY": "tests.integration.pipeline_support:stats_engines",
        "CLAD_METRICS_PORT": "0", "CLAD_BATCH_SIZE": "16", "CLAD_MAX_WAIT_MS": "50",
        "CLAD_MAX_BACKOFF_S": "1", "CLAD_DB_CONNECT_TIMEOUT_S": "2",
        "PYTHONPATH": str(REPO),
    })
    if redis_url:
        env["CLAD_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path, *,
                 address_space_bytes: int | None = None) -> subprocess.Popen[bytes]:
    """`clad worker` as a child process; with address_space_bytes, under that RLIMIT_AS
    (an allocation past it fails in the child, as on a machine with that much memory)."""
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    command = [sys.executable, "-m", "workers.cli.main", "worker"]
    if address_space_bytes:  # set by the child itself: no preexec_fn in a threaded parent
        command = [sys.executable, "-c", _LIMITED.format(limit=address_space_bytes), "worker"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


_LIMITED = """
import resource, runpy
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
runpy.run_module("workers.cli.main", run_name="__main__", alter_sys=True)
"""


def stop_worker(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def publish(kafka: KafkaSettings, count: int, *, start: int = 0,
            cameras: int = 4) -> list[uuid.UUID]:
    """Publish `count` good frames spread over cameras/products; returns their ids."""
    from pipeline.frames import make_envelope

    ensure_topics(kafka)
    ids = []
    with FramePublisher(kafka) as publisher:
        for i in range(start, start + count):
            envelope = make_envelope(png_frame(i, defect=i % 10 == 0),
                                     camera_id=f"cam-{i % cameras}", line_id="line-1",
                                     product=PRODUCTS[i % len(PRODUCTS)])
            publisher.publish(envelope)
            ids.append(envelope.header.frame_id)
    assert publisher.failed == 0
    return ids


def verdict_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Verdict.__table__)) or 0


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str,
               alive: Callable[[], None] = lambda: None) -> None:
    """Poll `condition`; `alive` raises if a worker died meanwhile (clearer failures)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def verdicts_by_frame(engine: Engine) -> dict[uuid.UUID, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(Verdict.frame_id, func.count())
                                  .group_by(Verdict.frame_id)).all()
    return {frame_id: n for frame_id, n in rows}
