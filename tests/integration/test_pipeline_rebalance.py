"""A busy group stays live while workers join and leave (issue 19: a commit refused by a
rebalance was retried before the rejoin could finish, freezing every member)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine

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


def test_workers_joining_and_leaving_a_busy_group_never_stall_it(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    ids = publish(kafka, 2000)
    # Tiny batches: a commit every few frames, so rebalances land on commits. The default
    # backoff (10 s), as on a plant: retrying a refused commit then stalled for minutes.
    env = worker_env(kafka, postgres_url, redis_url, CLAD_BATCH_SIZE="2",
                     CLAD_MAX_BACKOFF_S="10")
    workers = [start_worker(env, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        wait_until(lambda: verdict_count(clean_db) >= 200, timeout_s=90,
                   what="the first 200 verdicts")
        for round_ in range(3):  # join, then leave, three times while the backlog drains
            workers.append(start_worker(env, tmp_path / f"joiner-{round_}.log"))
            time.sleep(4)
            stop_worker(workers.pop(0))
            time.sleep(2)
        last, last_change = -1, time.monotonic()
        while (done := verdict_count(clean_db)) < len(ids):
            if done != last:
                last, last_change = done, time.monotonic()
            assert time.monotonic() - last_change < 60, (
                f"group stalled at {done} of {len(ids)} verdicts for 60 s")
            assert all(w.poll() is None for w in workers), "a worker died"
            time.sleep(0.5)
    finally:
        for worker in workers:
            stop_worker(worker)
    by_frame = verdicts_by_frame(clean_db)
    assert set(by_frame) == set(ids) and set(by_frame.values()) == {1}
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "offset commit failed: [Error 27]" not in logs, "a refused commit was retried"
    print(f"commits given up during rebalances: {logs.count('offset commit given up')}")
