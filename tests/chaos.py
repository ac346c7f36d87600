"""Chaos run of the whole pipeline on the real broker, Postgres and Redis.

Frames stream in while workers of one consumer group are SIGKILLed (and restarted),
join and leave, while Postgres is black-holed (bytes dropped, no reset) or reset
through a loopback proxy, and while Redis is cut. At the end every frame id is
counted in the verdict rows and in the verdict events:

    lost        frames published and acknowledged, with no verdict row
    duplicates  frames with more than one verdict row
    stalled     the group made no progress for `stall_s` after the faults ended
    dup events  frames whose event was published more than once (consumers
                de-duplicate by frame id: pipeline.verdict_events)

The short form runs in the test suite (tests/integration/test_chaos.py). The long
form is a command (figures in workers/streaming/NOTES.md):

    .venv/bin/python -m tests.chaos --frames 5000 --kills 20 --joins 5 \\
        --db-blackholes 3 --db-resets 2 --redis-cuts 2

Workers score with the deterministic stats engine (tests/integration/pipeline_support),
so the counts are about delivery, not the model.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kafka import KafkaConsumer
from sqlalchemy.engine import make_url

from pipeline.frames import make_envelope
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.storage.database import make_engine
from pipeline.verdict_events import event_frame_id
from tests.databases import fresh_database
from tests.integration.pipeline_support import (
    PRODUCTS,
    kafka_settings,
    png_frame,
    start_worker,
    stop_worker,
    verdicts_by_frame,
    worker_env,
)
from tests.integration.tcp_proxy import TcpProxy

REDIS_URL = "redis://127.0.0.1:6379/14"


@dataclass(frozen=True)
class ChaosPlan:
    frames: int = 300
    workers: int = 2  # running at the start; joins add up to workers + 1
    kills: int = 3  # SIGKILL of a random worker, restarted a moment later
    joins: int = 1  # a worker joins, and later one leaves (SIGTERM)
    db_blackholes: int = 1
    db_resets: int = 1
    redis_cuts: int = 1
    outage_s: float = 8.0  # length of each database / Redis outage
    gap_s: tuple[float, float] = (2.0, 5.0)  # pause between two faults
    stall_s: float = 90.0  # no new verdict for this long after the faults = stalled
    seed: int = 7
    # Worker settings that bound waits, so an outage costs seconds in a short run.
    checkout_timeout_s: float = 5.0
    shutdown_timeout_s: float = 15.0


@dataclass
class ChaosReport:
    published: int = 0
    verdict_rows: int = 0
    lost: int = 0
    duplicate_rows: int = 0
    events: int = 0
    frames_with_events: int = 0
    duplicate_events: int = 0
    missing_events: int = 0
    stalled: bool = False
    crashed_workers: int = 0  # exited on their own, not by a fault we injected
    elapsed_s: float = 0.0
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicate_rows == 0 and not self.stalled
                and self.crashed_workers == 0 and self.missing_events == 0)

    def summary(self) -> str:
        return (f"published {self.published}, verdict rows {self.verdict_rows}: "
                f"lost {self.lost}, duplicate rows {self.duplicate_rows}, "
                f"stalled {self.stalled}, crashed workers {self.crashed_workers}; events "
                f"{self.events} for {self.frames_with_events} frames: duplicate events "
                f"{self.duplicate_events}, missing events {self.missing_events}; "
                f"{len(self.faults)} faults in {self.elapsed_s:.0f} s")


class _Workers:
    """The group's worker processes; tells our kills from crashes."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.running: list[subprocess.Popen[bytes]] = []
        self.stopped: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> None:
        self.started += 1
        self.running.append(start_worker(self.env, self.workdir / f"worker-{self.started}.log"))

    def kill(self, rng: random.Random) -> None:
        victim = self.running.pop(rng.randrange(len(self.running)))
        victim.kill()
        victim.wait()
        self.stopped.append(victim)

    def leave(self, rng: random.Random) -> None:
        victim = self.running.pop(rng.randrange(len(self.running)))
        stop_worker(victim)
        self.stopped.append(victim)

    def crashed(self) -> int:
        return sum(1 for p in self.running if p.poll() is not None)

    def stop_all(self) -> None:
        for process in self.running:
            stop_worker(process)
        self.stopped.extend(self.running)
        self.running = []


def _publish_steadily(kafka, count: int, duration_s: float, ids: list[uuid.UUID],  # noqa: ANN001
                      done: threading.Event) -> None:
    interval = duration_s / max(count, 1)
    with FramePublisher(kafka) as publisher:
        for i in range(count):
            envelope = make_envelope(png_frame(i, defect=i % 10 == 0), camera_id=f"cam-{i % 8}",
                                     line_id="line-1", product=PRODUCTS[i % len(PRODUCTS)])
            publisher.publish(envelope)
            ids.append(envelope.header.frame_id)
            time.sleep(interval)
    done.set()


def _events_by_frame(bootstrap: str, topic: str, idle_s: float = 5.0) -> Counter[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest",
                             consumer_timeout_ms=int(idle_s * 1000))
    try:
        ids = (event_frame_id(record) for record in consumer)
        return Counter(i for i in ids if i is not None)
    finally:
        consumer.close()


def _schedule(plan: ChaosPlan, rng: random.Random) -> list[str]:
    schedule = (["kill"] * plan.kills + ["join"] * plan.joins + ["db_blackhole"]
                * plan.db_blackholes + ["db_reset"] * plan.db_resets
                + ["redis_cut"] * plan.redis_cuts)
    rng.shuffle(schedule)
    # Each join is followed, somewhere later, by a leave: the group grows and shrinks.
    for i in reversed([i for i, fault in enumerate(schedule) if fault == "join"]):
        schedule.insert(rng.randrange(i + 1, len(schedule) + 1), "leave")
    return schedule


def run_chaos(plan: ChaosPlan, *, bootstrap: str, postgres_url: str, redis_url: str,
              workdir: Path, say: Callable[[str], None] | None = None) -> ChaosReport:
    say = say or (lambda line: print(line, flush=True))
    rng = random.Random(plan.seed)
    report = ChaosReport()
    started = time.monotonic()
    pg = make_url(postgres_url)
    redis_target = urlsplit(redis_url)
    pg_proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432).start()
    redis_proxy = TcpProxy(redis_target.hostname or "127.0.0.1",
                           redis_target.port or 6379).start()
    proxied_pg = pg.set(host="127.0.0.1", port=pg_proxy.port).render_as_string(
        hide_password=False)
    proxied_redis = f"redis://127.0.0.1:{redis_proxy.port}{redis_target.path}"
    kafka = kafka_settings(bootstrap, f"chaos-{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka)
    env = worker_env(kafka, proxied_pg, proxied_redis, CLAD_BATCH_SIZE="8",
                     CLAD_DB_CHECKOUT_TIMEOUT_S=str(plan.checkout_timeout_s),
                     CLAD_SHUTDOWN_TIMEOUT_S=str(plan.shutdown_timeout_s))
    workers = _Workers(env, workdir)
    db = make_engine(postgres_url)
    ids: list[uuid.UUID] = []
    published = threading.Event()
    try:
        for _ in range(plan.workers):
            workers.start()
        schedule = _schedule(plan, rng)
        mean_gap = sum(plan.gap_s) / 2
        duration = len(schedule) * (mean_gap + plan.outage_s / 2) + 10
        publisher = threading.Thread(target=_publish_steadily, daemon=True,
                                     args=(kafka, plan.frames, duration, ids, published))
        publisher.start()
        for fault in schedule:
            time.sleep(rng.uniform(*plan.gap_s))
            report.faults.append(fault)
            say(f"[{time.monotonic() - started:6.1f} s] {fault} "
                f"({len(workers.running)} workers, {len(verdicts_by_frame(db))} verdicts)")
            if fault == "kill":
                workers.kill(rng)
                time.sleep(rng.uniform(0.5, 2.0))
                workers.start()
            elif fault == "join":
                workers.start()
            elif fault == "leave":
                workers.leave(rng)
            elif fault in ("db_blackhole", "db_reset"):
                (pg_proxy.blackhole if fault == "db_blackhole" else pg_proxy.cut)()
                time.sleep(plan.outage_s)
                pg_proxy.restore()
            elif fault == "redis_cut":
                redis_proxy.cut()
                time.sleep(plan.outage_s)
                redis_proxy.restore()
            report.crashed_workers += workers.crashed()
            workers.running = [p for p in workers.running if p.poll() is None]
            while len(workers.running) < 1:  # a crash is counted; the run goes on
                workers.start()
        publisher.join()
        report.published = len(ids)
        say(f"[{time.monotonic() - started:6.1f} s] faults done; waiting for the group")
        last, last_change = -1, time.monotonic()
        while True:
            done = len(verdicts_by_frame(db))
            if done >= report.published:
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > plan.stall_s:
                report.stalled = True
                break
            report.crashed_workers += workers.crashed()
            time.sleep(1.0)
        time.sleep(2.0)  # the last batch's events follow its rows
    finally:
        workers.stop_all()
        pg_proxy.close()
        redis_proxy.close()
    rows = verdicts_by_frame(db)
    db.dispose()
    published_ids = set(ids)
    report.verdict_rows = sum(rows.values())
    report.lost = len(published_ids - set(rows))
    report.duplicate_rows = sum(1 for n in rows.values() if n > 1)
    events = _events_by_frame(bootstrap, kafka.topic_verdicts)
    report.events = sum(events.values())
    report.frames_with_events = len(events)
    report.duplicate_events = sum(1 for n in events.values() if n > 1)
    report.missing_events = len({str(i) for i in published_ids} - set(events))
    report.elapsed_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    from pipeline.broker import EmbeddedBroker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = ChaosPlan()
    for name in ("frames", "workers", "kills", "joins", "db_blackholes", "db_resets",
                 "redis_cuts", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name))
    parser.add_argument("--outage-s", type=float, default=defaults.outage_s)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    plan = ChaosPlan(frames=args.frames, workers=args.workers, kills=args.kills,
                     joins=args.joins, db_blackholes=args.db_blackholes,
                     db_resets=args.db_resets, redis_cuts=args.redis_cuts, seed=args.seed,
                     outage_s=args.outage_s)
    workdir = Path(f"/tmp/clad-chaos-{uuid.uuid4().hex[:6]}")
    workdir.mkdir(parents=True)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker, \
            fresh_database() as postgres_url:
        report = run_chaos(plan, bootstrap=broker.bootstrap_servers,
                           postgres_url=postgres_url, redis_url=REDIS_URL, workdir=workdir)
    print(report.summary())
    print(f"worker logs: {workdir}")
    if args.json:
        args.json.write_text(json.dumps({"plan": asdict(plan), "report": asdict(report)},
                                        indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
