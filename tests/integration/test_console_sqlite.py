"""The console's queries on SQLite (the demo's database behind `clad api`): the same
series, review queue and alarms as the Postgres tests expect from SPEC."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.storage import alarms, review, trends
from pipeline.storage.database import make_engine, make_session_factory, transaction
from pipeline.storage.history import HistoryFilter
from pipeline.storage.migrate import upgrade
from pipeline.storage.models import AlarmRule, Verdict
from pipeline.storage.repository import write_verdicts
from tests.integration.operator_data import SPEC, T0, blob_frame, record
from tests.integration.test_api_review import expected_queue

pytestmark = pytest.mark.integration


def test_series_review_and_alarms_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    upgrade(engine)
    _, heat, mask = blob_frame()
    records = [record(s, heat, mask) for s in SPEC]
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        write_verdicts(session, records)
    window = HistoryFilter(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1))
    with transaction(sessions) as session:
        ids = {str(f): v for f, v in session.execute(select(Verdict.frame_id, Verdict.id))}
        by_index = [ids[str(r.frame_id)] for r in records]
        got = Counter()
        for p in trends.rate_series(session, window, by="line", bucket="hour"):
            got[p.bucket.hour, p.key] = (p.total, p.anomalous)
        expected = Counter()
        for s in SPEC:
            total, anomalous = expected.get((s.captured_at.hour, s.line_id), (0, 0))
            expected[s.captured_at.hour, s.line_id] = (total + 1,
                                                       anomalous + (s.label == "anomalous"))
        assert got == expected
        shifts = trends.rate_series(session, window, by="product", bucket="shift")
        assert [(p.bucket, p.key, p.total) for p in shifts] == [
            (T0 - timedelta(hours=2), "bottle", 16), (T0 - timedelta(hours=2), "screw", 8)]
        h = trends.score_histogram(session, window, bins=4)
        assert sum(h.normal) == 12 and sum(h.anomalous) == 12 and h.threshold == 0.5

        queue = review.review_queue(session, since=window.since, until=T0 + timedelta(hours=4),
                                    per_hour=2, unclear_prefix="unclear")
        assert [v.id for v in queue.items] == [by_index[i]
                                               for i in expected_queue(SPEC, per_hour=2)]

        session.add(AlarmRule(name="spike", scope="line", target="line-1", max_rate=0.5,
                              window_minutes=60, min_verdicts=3, created_by="admin"))
        session.flush()
        assert len(alarms.evaluate(session, T0 + timedelta(hours=4)).raised) == 1
        assert len(alarms.evaluate(session, T0 + timedelta(hours=4)).raised) == 0
        assert len(alarms.unpublished(session)) == 1
