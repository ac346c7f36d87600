"""Operator query latency over 1,000,000 verdicts in a scratch Postgres database.

    .venv/bin/python bench/history.py [--verdicts 1000000] [--reps 50] [--keep]

Seeds lines, cameras, frames, verdicts (5 % anomalous, one or two described
regions each) over 30 days with server-side INSERT ... SELECT generate_series
(one statement per table, nothing streamed from Python), migrates with Alembic
so the real indexes are there, then times the query layer the API uses and
prints p50/p99 per query. Figures go to bench/results/history.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from pipeline.storage import alarms, history, review, trends
from pipeline.storage.database import make_engine
from pipeline.storage.history import HistoryFilter
from pipeline.storage.migrate import upgrade
from workers.api.routes_history import latest_per_camera, summaries

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
END = datetime(2026, 11, 23, tzinfo=UTC)
DAYS = 30
KINDS = ["scratch on the neck", "crack in the body", "contamination", "broken rim",
         "missing print", "dent in the shoulder"]
SEED_SQL = """
SELECT setseed(0.42);
INSERT INTO production_lines (id, name, created_at)
  SELECT 'line-' || l, 'Line ' || l, now() FROM generate_series(1, 4) l;
INSERT INTO cameras (id, line_id, name, created_at)
  SELECT 'cam-' || c, 'line-' || ((c - 1) / 4 + 1), 'Camera ' || c, now()
  FROM generate_series(1, 16) c;
CREATE TEMP TABLE seed AS
  SELECT i, gen_random_uuid() AS frame_id, 1 + i % 16 AS cam,
         :end - make_interval(secs => (:n - i) * :step) AS at, random() AS score
  FROM generate_series(1, :n) i;
INSERT INTO frames (id, camera_id, product, captured_at, received_at, width, height,
                    content_type)
  SELECT frame_id, 'cam-' || cam, (ARRAY['bottle','screw','capsule','grid'])[(cam - 1) / 4 + 1],
         at, at, 256, 256, 'image/png' FROM seed;
INSERT INTO verdicts (frame_id, camera_id, line_id, product, captured_at, model_version, score,
                      threshold, label, latency_ms, decided_at)
  SELECT frame_id, 'cam-' || cam, 'line-' || ((cam - 1) / 4 + 1),
         (ARRAY['bottle','screw','capsule','grid'])[(cam - 1) / 4 + 1], at, 'v1', score, 0.95,
         CASE WHEN score >= 0.95 THEN 'anomalous' ELSE 'normal' END, 20, at FROM seed;
INSERT INTO regions (verdict_id, index, mask_rle, bbox_x, bbox_y, bbox_w, bbox_h, area,
                     peak_score, mean_score, description, confidence)
  SELECT v.id, k, '{"size": [256, 256], "counts": [65536]}', 10, 10, 20, 20, 400, 0.9, 0.7,
         (CAST(:kinds AS text[]))[1 + floor(random() * 6)::int], 0.8
  FROM verdicts v CROSS JOIN generate_series(0, 1) k
  WHERE v.label = 'anomalous' AND (k = 0 OR v.id % 3 = 0);
"""


def seed(engine, n: int) -> None:  # noqa: ANN001 - Engine
    step = DAYS * 86400 / n
    with engine.begin() as connection:
        for statement in filter(str.strip, SEED_SQL.split(";")):
            connection.execute(text(statement), {"end": END, "n": n, "step": step,
                                                 "kinds": KINDS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def queries(rng: random.Random) -> dict[str, Callable[[Session], object]]:
    """Each call picks fresh parameters so the figures are not one cached plan's best case."""

    def day() -> HistoryFilter:
        until = END - timedelta(hours=rng.randrange(0, 24 * (DAYS - 2)))
        return HistoryFilter(since=until - timedelta(hours=24), until=until)

    def cam() -> str:
        return f"cam-{rng.randint(1, 16)}"

    def line() -> str:
        return f"line-{rng.randint(1, 4)}"

    def deep_page(s: Session) -> object:
        # Pages 1..20 walked by keyset, then page 21 timed on its own below.
        f = HistoryFilter(camera_id=cam())
        page = history.list_verdicts(s, f, limit=50)
        for _ in range(20):
            page = history.list_verdicts(s, f, limit=50, after=page.next_cursor)
        return page

    return {
        "history: newest 50, no filter": lambda s: summaries(
            s, history.list_verdicts(s, HistoryFilter(), limit=50).items),
        "history: line, 24 h window": lambda s: history.list_verdicts(
            s, HistoryFilter(**{**day().__dict__, "line_id": line()}), limit=50),
        "history: camera + anomalous": lambda s: history.list_verdicts(
            s, HistoryFilter(camera_id=cam(), label="anomalous"), limit=50),
        "history: defect kind": lambda s: history.list_verdicts(
            s, HistoryFilter(description=rng.choice(KINDS)), limit=50),
        "history: defect kind + line, 24 h": lambda s: history.list_verdicts(
            s, HistoryFilter(**{**day().__dict__, "line_id": line(),
                                "description": rng.choice(KINDS)}), limit=50),
        "history: score >= 0.99": lambda s: history.list_verdicts(
            s, HistoryFilter(min_score=0.99), limit=50),
        "history: 21 pages by keyset, camera": deep_page,
        "rate per hour, 24 h": lambda s: history.defect_rate(s, day(), "hour"),
        "rate per camera, 7 days": lambda s: history.defect_rate(
            s, HistoryFilter(since=END - timedelta(days=7), until=END), "camera"),
        "top defect kinds, 24 h": lambda s: history.defect_kinds(s, day()),
        "trend 24 h vs previous": lambda s: history.trend(s, day(), now=END),
        "live: latest per camera": latest_per_camera,
        # The console pages of issue 16.
        "trends: rate per line by hour, 24 h": lambda s: trends.rate_series(
            s, day(), by="line", bucket="hour"),
        "trends: rate per camera by day, 30 d": lambda s: trends.rate_series(
            s, HistoryFilter(since=END - timedelta(days=30), until=END), by="camera",
            bucket="day"),
        "trends: kinds by shift, 7 d": lambda s: trends.kind_series(
            s, HistoryFilter(since=END - timedelta(days=7), until=END), bucket="shift"),
        "trends: score histogram, product, 24 h": lambda s: trends.score_histogram(
            s, HistoryFilter(**{**day().__dict__, "product": "bottle"})),
        "review queue: 7 d, 3 per product-hour, newest 50": lambda s: review.review_queue(
            s, since=END - timedelta(days=7), until=END, per_hour=3,
            unclear_prefix="unclear"),
        "trends: kinds by shift, top 8 + other, 7 d": lambda s: trends.kind_series(
            s, HistoryFilter(since=END - timedelta(days=7), until=END), bucket="shift", top=8),
        "history: operator overruled, 24 h": lambda s: history.list_verdicts(
            s, HistoryFilter(**{**day().__dict__, "operator": "overruled"}), limit=50),
        "alarms: evaluate 20 rules (60 min)": lambda s: alarms.evaluate(s, END),
    }


def add_alarm_rules(engine) -> None:  # noqa: ANN001 - Engine
    """A rule per line and per camera, as a plant would configure them."""
    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO alarm_rules (name, scope, target, max_rate, window_minutes, "
            "min_verdicts, enabled, created_by, created_at) "
            "SELECT 'line-' || l, 'line', 'line-' || l, 0.04, 60, 20, true, 'bench', now() "
            "FROM generate_series(1, 4) l UNION ALL "
            "SELECT 'cam-' || c, 'camera', 'cam-' || c, 0.04, 60, 20, true, 'bench', now() "
            "FROM generate_series(1, 16) c"))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    parser.add_argument("--database", help="Time on this already seeded database (made "
                                           "with --keep) instead of seeding a new one.")
    parser.add_argument("--only", help="Only the queries whose label contains this.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/history.json"))
    args = parser.parse_args()

    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = args.database or f"clad_bench_{uuid.uuid4().hex[:8]}"
    if not args.database:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(engine)
        t0 = time.perf_counter()
        if not args.database:
            seed(engine, args.verdicts)
            add_alarm_rules(engine)
        seed_s = time.perf_counter() - t0
        with engine.connect() as c:
            counts = {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                      for t in ("verdicts", "regions")}
        print(f"seeded {counts['verdicts']:,} verdicts, {counts['regions']:,} regions "
              f"in {seed_s:.1f} s ({name})")
        rng = random.Random(7)
        results = {}
        with Session(engine) as session:
            for label, run in queries(rng).items():
                if args.only and args.only not in label:
                    continue
                run(session)  # warm the plan and the buffer cache once
                samples = []
                for _ in range(args.reps):
                    start = time.perf_counter()
                    run(session)
                    samples.append((time.perf_counter() - start) * 1000)
                    session.rollback()
                results[label] = {"p50_ms": round(statistics.median(samples), 2),
                                  "p99_ms": round(percentile(samples, 0.99), 2),
                                  "reps": args.reps}
                print(f"{label:38s} p50 {results[label]['p50_ms']:8.2f} ms   "
                      f"p99 {results[label]['p99_ms']:8.2f} ms")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "verdicts": counts["verdicts"], "regions": counts["regions"],
            "seed_seconds": round(seed_s, 1), "measured_at": datetime.now(UTC).isoformat(),
            "queries": results}, indent=2))
        print(f"wrote {args.out}")
    finally:
        engine.dispose()
        if not args.keep and not args.database:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
