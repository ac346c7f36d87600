"""End-to-end pipeline throughput and latency vs engine-only throughput.

    .venv/bin/python -m bench.pipeline [--frames 192] [--batch-sizes 1,8,32] [--encoding png]

(as a module: run as a file, bench/ would shadow the `pipeline` package.)

Same machine, same run, real CLAD engine (k-shot bank from mvtec-sample/bottle),
embedded Tansu broker (unless CLAD_BOOTSTRAP_SERVERS names one), fresh SQLite.
Frames are published as JPEG (quality 95, what a line camera streams) unless
--encoding png sends the dataset's PNG files (a 900 px PNG costs ~18 ms of CPU to
decode, more than the engine's whole per-frame time on 2 cores).
Per batch size:
  - engine-only frames/s: engine.infer on pre-decoded, pre-resized batches, measured
    right before and right after the pipeline run and averaged (load drifts);
  - pipeline frames/s: a backlog of N frames on the topic, one worker draining it,
    from its first consumed frame to the last verdict stored;
  - latency p50/p99 (capture timestamp -> verdict stored) with frames published at
    ~70% of the measured pipeline rate, so it is latency, not queueing;
  - efficiency = pipeline frames/s / engine-only frames/s; beside it the CPU-time
    efficiency (engine CPU-s per frame / process CPU-s per frame in the pipeline run),
    which other processes on a shared machine disturb much less.
Writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.broker import EmbeddedBroker
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher, publish_images
from pipeline.settings import EMBEDDED_BROKER, Settings, load_settings
from pipeline.storage.database import make_engine, make_session_factory
from pipeline.storage.migrate import upgrade
from pipeline.storage.queries_pipeline import verdicts_for
from workers.demo.data import discover, load_rgb
from workers.demo.run import build_engines
from workers.streaming.runner import build_worker

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mvtec-sample"


def engine_only(engine, frames: list[np.ndarray], batch: int) -> tuple[float, float]:  # noqa: ANN001
    """(frames/s, process CPU seconds per frame) of engine.infer alone."""
    import cv2

    s = engine.input_size
    small = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])
    engine.infer(small[:batch])  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(small), batch):
        engine.infer(small[i:i + batch])
    return (len(small) / (time.perf_counter() - started),
            (time.process_time() - cpu) / len(small))


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "OpenCV failed to encode a JPEG"
    return buf.tobytes()


def _settings(base: Settings, bootstrap: str, db_url: str, batch: int, tag: str) -> Settings:
    kafka = base.kafka.model_copy(update={
        "bootstrap_servers": bootstrap, "topic_frames": f"frames-{tag}",
        "topic_verdicts": f"verdicts-{tag}", "topic_dlq": f"dlq-{tag}",
        "consumer_group": f"bench-{tag}"})
    worker = base.worker.model_copy(update={"batch_size": batch, "metrics_port": 0,
                                            "engine_factory": None})
    database = base.database.model_copy(update={"database_url": db_url})
    return base.model_copy(update={"kafka": kafka, "worker": worker, "database": database})


def run_pipeline(settings: Settings, engines: dict, images: list[tuple[str, bytes]],
                 factory, *, fps: float | None) -> dict:  # noqa: ANN001
    ensure_topics(settings.kafka)
    stop = threading.Event()
    worker = build_worker(settings, engines, stop=stop)
    published: dict[str, uuid.UUID] = {}
    with FramePublisher(settings.kafka) as publisher:
        if fps is None:  # backlog first: throughput of the worker alone
            published = publish_images(publisher, images, camera_id="cam-bench",
                                       line_id="bench", product="bottle").frame_ids
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    started = cpu_started = None
    if fps is not None:
        time.sleep(settings.kafka.session_timeout_ms / 1000)  # group joined before timing
        with FramePublisher(settings.kafka) as publisher:
            published = publish_images(publisher, images, camera_id="cam-bench",
                                       line_id="bench", product="bottle", fps=fps).frame_ids
    ids = list(published.values())
    # Wait on the worker's own "verdicts stored" counter, not the database: polling
    # verdict rows (with heatmaps) every few ms took ~40 ms of CPU per frame away from
    # the worker it measures. The rows are read once, at the end.
    progress, last_change = -1, time.monotonic()
    while (stored := worker.metrics.verdicts._value.get()) < len(ids):
        if started is None and worker.metrics.frames._value.get() > 0:
            started, cpu_started = time.time(), time.process_time()
        if stored != progress:
            progress, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > 120:
            raise RuntimeError(f"no new verdict for 120 s: {stored} of {len(ids)} stored "
                               "(a frame in the dead-letter topic? see the worker's log)")
        time.sleep(0.005)
    cpu_s = time.process_time() - cpu_started if cpu_started is not None else None
    with factory() as session:
        verdicts = verdicts_for(session, ids)
    assert len(verdicts) == len(ids), f"{len(verdicts)} verdicts for {len(ids)} frames"
    # Where the worker's wall time went, per stage (clad_stage_seconds sums).
    stages = {s.labels["stage"]: round(s.value, 3) for m in worker.metrics.registry.collect()
              if m.name == "clad_stage_seconds" for s in m.samples
              if s.name.endswith("_sum")}
    stop.set()
    thread.join(30)
    decided = [v.decided_at.replace(tzinfo=UTC) if v.decided_at.tzinfo is None else v.decided_at
               for v in verdicts]
    captured = [v.captured_at.replace(tzinfo=UTC) if v.captured_at.tzinfo is None
                else v.captured_at for v in verdicts]
    latencies = np.array([(d - c).total_seconds() * 1000 for d, c in zip(decided, captured,
                                                                        strict=True)])
    end = max(decided).timestamp()
    return {"frames": len(ids),
            "frames_per_s": len(ids) / (end - started) if started else None,
            "cpu_s_per_frame": cpu_s / len(ids) if cpu_s else None, "stage_seconds": stages,
            "batches": worker.batches,
            "latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p99": float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=192)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    parser.add_argument("--encoding", choices=("jpeg", "png"), default="jpeg",
                        help="how frames are published: JPEG quality 95, as a line camera "
                             "streams (default), or the dataset's PNG files as they are")
    parser.add_argument("--backend", default=None,
                        help="runtime backend (default: CLAD_BACKEND, i.e. auto = the worker's)")
    parser.add_argument("--requests", type=int, default=None,
                        help="CPU inference requests in flight (default: CLAD_INFER_REQUESTS, "
                             "i.e. one per 4 cores up to 4; 1 = the path before issue 17)")
    args = parser.parse_args()
    base = load_settings()
    backend = args.backend or base.model.backend
    product = discover(DATA / "bottle", shots=4)[0]
    # threshold calibrated from the references; the same backend the worker would use
    requests = args.requests or base.model.infer_requests
    engines = build_engines([product], backend=backend, max_batch=32, requests=requests)
    paths = (product.frames * (args.frames // len(product.frames) + 1))[:args.frames]
    rgb = [load_rgb(p) for p in paths]
    images = [(f"{i}:{p}", p.read_bytes() if args.encoding == "png" else jpeg_bytes(im))
              for i, (p, im) in enumerate(zip(paths, rgb, strict=True))]
    results = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        bootstrap = (broker.bootstrap_servers if base.kafka.bootstrap_servers == EMBEDDED_BROKER
                     else base.kafka.bootstrap_servers)
        db_url = f"sqlite:///{tmp}/bench.db"
        db = make_engine(db_url)
        upgrade(db)
        factory = make_session_factory(db)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            # Engine-only right before AND after the pipeline run, averaged: on a
            # shared machine the load drifts, and a one-sided reference skews the ratio.
            before = engine_only(engines["bottle"], rgb, batch)
            tag = uuid.uuid4().hex[:8]
            thr = run_pipeline(_settings(base, bootstrap, db_url, batch, tag + "t"), engines,
                               images, factory, fps=None)
            after = engine_only(engines["bottle"], rgb, batch)
            engine_fps = (before[0] + after[0]) / 2
            engine_cpu = (before[1] + after[1]) / 2
            paced = run_pipeline(_settings(base, bootstrap, db_url, batch, tag + "l"), engines,
                                 images[: max(16, args.frames // 2)], factory,
                                 fps=0.7 * (thr["frames_per_s"] or engine_fps))
            row = {"batch_size": batch, "engine_only_frames_per_s": engine_fps,
                   "pipeline_frames_per_s": thr["frames_per_s"],
                   "efficiency": (thr["frames_per_s"] or 0) / engine_fps,
                   "engine_only_frames_per_s_before_after": [before[0], after[0]],
                   # CPU-time view, robust to other processes: engine CPU-s per frame
                   # / whole-process CPU-s per frame while the worker drained the backlog.
                   "cpu_efficiency": engine_cpu / thr["cpu_s_per_frame"]
                   if thr["cpu_s_per_frame"] else None,
                   "engine_only_cpu_ms_per_frame": engine_cpu * 1000,
                   "pipeline_cpu_ms_per_frame": (thr["cpu_s_per_frame"] or 0) * 1000,
                   # the pipeline's own CPU (decode, heatmaps, DB, Kafka) beside the engine's
                   "pipeline_cpu_ms_per_frame_outside_engine":
                       ((thr["cpu_s_per_frame"] or 0) - engine_cpu) * 1000,
                   "backlog_latency_ms_p50": thr["latency_ms_p50"],
                   "backlog_stage_seconds": thr["stage_seconds"],
                   "backlog_batches": thr["batches"],
                   "latency_ms_p50": paced["latency_ms_p50"],
                   "latency_ms_p99": paced["latency_ms_p99"], "frames": thr["frames"]}
            results.append(row)
            print(f"batch {batch:>3}: engine-only {engine_fps:6.1f} f/s | pipeline "
                  f"{row['pipeline_frames_per_s']:6.1f} f/s | efficiency {row['efficiency']:.2f}"
                  f" (engine before/after {before[0]:.1f}/{after[0]:.1f} f/s; CPU-time "
                  f"efficiency {row['cpu_efficiency'] or 0:.2f}; CPU ms/frame engine "
                  f"{row['engine_only_cpu_ms_per_frame']:.1f} + outside "
                  f"{row['pipeline_cpu_ms_per_frame_outside_engine']:.1f})"
                  f" | latency p50 {row['latency_ms_p50']:7.1f} ms p99 "
                  f"{row['latency_ms_p99']:7.1f} ms", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "frame": f"mvtec-sample/bottle 900x900, published as {args.encoding.upper()}"
                 + (" (quality 95)" if args.encoding == "jpeg" else " (the files)"),
        "engine": f"CLAD k-shot (4 refs) efficientnet-lite0, backend {backend}, "
                  f"requests {requests or 'default'}",
        "load_average": os.getloadavg(), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
