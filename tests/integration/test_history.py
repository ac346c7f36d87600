"""The query layer on real Postgres: every filter, keyset pages, aggregates, trend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from pipeline.storage import history
from pipeline.storage.history import HistoryFilter
from tests.integration.operator_data import SPEC, T0, Seeded, Spec

pytestmark = pytest.mark.integration


@pytest.fixture
def session(pg_engine: Engine, seeded: Seeded) -> Iterator[Session]:
    with Session(pg_engine) as s:
        yield s


FILTERS: list[tuple[HistoryFilter, Callable[[Spec], bool]]] = [
    (HistoryFilter(), lambda s: True),
    (HistoryFilter(line_id="line-2"), lambda s: s.line_id == "line-2"),
    (HistoryFilter(camera_id="cam-a"), lambda s: s.camera_id == "cam-a"),
    (HistoryFilter(product="bottle"), lambda s: s.product == "bottle"),
    (HistoryFilter(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2)),
     lambda s: T0 + timedelta(hours=1) <= s.captured_at < T0 + timedelta(hours=2)),
    (HistoryFilter(label="anomalous"), lambda s: s.label == "anomalous"),
    (HistoryFilter(description="contamination"), lambda s: "contamination" in s.defects),
    (HistoryFilter(min_score=0.25, max_score=0.6), lambda s: 0.25 <= s.score <= 0.6),
    (HistoryFilter(camera_id="cam-b", label="anomalous", description="crack in the body"),
     lambda s: s.camera_id == "cam-b" and "crack in the body" in s.defects),
]


@pytest.mark.parametrize(("f", "keep"), FILTERS)
def test_each_filter_returns_exactly_the_matching_verdicts_newest_first(
        session: Session, seeded: Seeded, f: HistoryFilter, keep: Callable[[Spec], bool]) -> None:
    expected = [seeded.verdict_ids[s.index] for s in reversed(SPEC) if keep(s)]
    assert expected, "a filter that matches nothing tests nothing"
    page = history.list_verdicts(session, f, limit=100)
    assert [v.id for v in page.items] == expected
    assert page.next_cursor is None
    assert history.count_matching(session, f) == len(expected)


def test_keyset_pages_cover_everything_once_in_order(session: Session, seeded: Seeded) -> None:
    seen, cursor = [], None
    for _ in range(10):
        page = history.list_verdicts(session, HistoryFilter(), limit=5, after=cursor)
        seen += [v.id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [seeded.verdict_ids[s.index] for s in reversed(SPEC)]


def test_page_size_is_capped(session: Session, seeded: Seeded) -> None:
    assert len(history.list_verdicts(session, HistoryFilter(), limit=10**6).items) == len(SPEC)
    assert len(history.list_verdicts(session, HistoryFilter(), limit=0).items) == 1


@pytest.mark.parametrize("by", ["camera", "line", "product", "hour"])
def test_defect_rate_groups(session: Session, seeded: Seeded, by: str) -> None:
    def key(s: Spec) -> str:
        if by == "hour":
            return s.captured_at.strftime("%Y-%m-%dT%H:00:00Z")
        return {"camera": s.camera_id, "line": s.line_id, "product": s.product}[by]

    total = Counter(key(s) for s in SPEC)
    bad = Counter(key(s) for s in SPEC if s.label == "anomalous")
    rows = history.defect_rate(session, HistoryFilter(), by)  # type: ignore[arg-type]
    assert {r.key: (r.total, r.anomalous) for r in rows} == {
        k: (total[k], bad[k]) for k in total}
    assert all(r.rate == pytest.approx(r.anomalous / r.total) for r in rows)


def test_top_defect_kinds_count_verdicts_and_rate(session: Session, seeded: Seeded) -> None:
    counts = Counter(d for s in SPEC for d in s.defects)
    rows = history.defect_kinds(session, HistoryFilter(), top=2)
    # Most verdicts first, ties by name.
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert [(r.description, r.verdicts) for r in rows] == expected
    assert rows[0].rate == pytest.approx(rows[0].verdicts / len(SPEC))


def test_trend_compares_with_the_previous_window(session: Session, seeded: Seeded) -> None:
    # 10:00-12:00 against 08:00-10:00: scores rise with time, so defects rise.
    f = HistoryFilter(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=4))
    t = history.trend(session, f, now=T0 + timedelta(hours=4))
    cur = [s for s in SPEC if s.captured_at >= T0 + timedelta(hours=2)]
    prev = [s for s in SPEC if s.captured_at < T0 + timedelta(hours=2)]
    assert (t.current.total, t.previous.total) == (len(cur), len(prev))
    assert t.current.anomalous == sum(s.label == "anomalous" for s in cur)
    assert t.previous.anomalous == sum(s.label == "anomalous" for s in prev)
    assert t.rate_change > 0
    kinds = {k.description: (k.current, k.previous) for k in t.kinds}
    for name, (now, before) in kinds.items():
        assert now == sum(name in s.defects for s in cur)
        assert before == sum(name in s.defects for s in prev)
