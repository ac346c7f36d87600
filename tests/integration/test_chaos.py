"""The chaos run's short form: a few of each fault while frames stream; nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.chaos import ChaosPlan, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kills_joins_leaves_and_outages_lose_and_duplicate_nothing(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    plan = ChaosPlan(frames=400, workers=2, kills=3, joins=1, db_blackholes=1, db_resets=1,
                     redis_cuts=1, outage_s=6.0)
    report = run_chaos(plan, bootstrap=kafka_bootstrap, postgres_url=postgres_url,
                       redis_url=redis_url, workdir=tmp_path)
    print(report.summary())
    assert report.published == plan.frames
    assert report.faults.count("kill") == 3 and report.faults.count("leave") == 1
    assert not report.stalled, report.summary()
    assert report.crashed_workers == 0, f"{report.summary()}; logs in {tmp_path}"
    assert report.lost == 0 and report.duplicate_rows == 0, report.summary()
    assert report.verdict_rows == plan.frames
    # Events are at-least-once: every frame has one; repeats are removed by frame id.
    assert report.missing_events == 0 and report.frames_with_events == plan.frames
