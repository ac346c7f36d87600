"""End-to-end pipeline throughput and latency vs engine-only throughput.

    .venv/bin/python -m bench.pipeline [--frames 192] [--batch-sizes 1,8,32] [--encoding png]
        [--defect-share 0.05 | --all-frames] [--context | --no-context]

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
Frames: by default a line-like stream, `--defect-share` (5%) of defective frames among
normal ones (the product's few normal test images repeated), so the describe stage is
charged as a line charges it; `--all-frames` sends the product's test images as they are
(about half defective: the bench before issue 33). The engine scores with the worker's
line context when CLAD_LINE_CONTEXT is on (the default; `--no-context` / `--context`
override it), through the same context stage graph as a worker (onnxruntime / OpenVINO
CPU backends); the row then records the context's size and the frames the lead spared.
CPU per frame by stage: the process CPU time (all threads) spent inside each of the
worker's timed stages (clad_stage_seconds), divided by the frames; stages that overlap
on different threads both count the overlap, so the stages can sum above the total.
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
from contextlib import contextmanager
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


class CpuStages:
    """Stand-in for the worker's clad_stage_seconds histogram: each `.labels(stage).time()`
    still observes the wall time there, and also adds the process CPU time spent inside
    it to `cpu_s[stage]`."""

    def __init__(self, histogram) -> None:  # noqa: ANN001
        self._histogram = histogram
        self.cpu_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def labels(self, stage: str):  # noqa: ANN201
        return _CpuStage(self._histogram.labels(stage), stage, self)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._histogram, name)


class _CpuStage:
    def __init__(self, child, stage: str, owner: CpuStages) -> None:  # noqa: ANN001
        self._child, self._stage, self._owner = child, stage, owner

    @contextmanager
    def time(self):  # noqa: ANN201
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._child.observe(time.perf_counter() - wall)
            spent = time.process_time() - cpu
            with self._owner._lock:  # noqa: SLF001
                self._owner.cpu_s[self._stage] = self._owner.cpu_s.get(self._stage, 0.0) + spent

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._child, name)


def line_stream(frames: list[Path], count: int, share: float, seed: int = 0) -> list[Path]:
    """`count` frames of which round(share x count) (at least 1 when share > 0) are
    defective, the rest normal, each kind cycled through its images, in a seeded order."""
    normal = [f for f in frames if f.parent.name == "good"]
    defects = [f for f in frames if f.parent.name != "good"]
    if not normal or (share > 0 and not defects):
        raise ValueError("a line stream needs normal and defective test images")
    k = min(count, max(1 if share > 0 else 0, round(share * count)))
    picked = [defects[i % len(defects)] for i in range(k)]
    picked += [normal[i % len(normal)] for i in range(count - k)]
    order = np.random.default_rng(seed).permutation(len(picked))
    return [picked[i] for i in order]


def with_context(engines: dict, settings: Settings, requests: int | None) -> dict:  # noqa: ANN001
    """The engines with the worker's line context (as workers.streaming.scoring.load_trained
    adds it to a saved model): the context-stage graph under a CPU backend's runtime."""
    from engine.runtime.context_stage import OnnxContextStage
    from engine.runtime.parallel import cpu_cores, default_requests, threads_per_request
    from workers.streaming.scoring import CladRuntimeEngine, context_config

    cfg = context_config(settings.context.model_copy(update={"line_context": True}))
    out = {}
    for product, e in engines.items():
        name = getattr(e.backend, "name", "") or ""
        kind = next((k for k in ("onnxruntime", "openvino") if name.startswith(k + "-cpu")), None)
        stage = None
        if kind is not None and e.runtime.text_branch is None:
            n = requests or default_requests(cpu_cores())
            stage = OnnxContextStage(e.runtime, None, threads_per_request(cpu_cores(), n),
                                     requests=n, kind=kind)  # fmt: skip
        out[product] = CladRuntimeEngine(
            e.runtime, threshold=e.threshold, version=e.version, describer=e.describer,
            backend=e.backend, pixel_threshold=e.pixel_threshold,
            describer_encoder=e.describer_encoder, context=cfg, context_stage=stage)  # fmt: skip
    return out


def context_stats(engine) -> dict | None:  # noqa: ANN001
    line = getattr(engine, "line_context", None)
    if line is None:
        return None
    return {"frames_in_context": len(line), "searched": line.searched_frames,
            "spared_by_the_lead": line.spared_frames}  # fmt: skip


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
    cpu_stages = CpuStages(worker.metrics.stage_seconds)
    worker.metrics.stage_seconds = cpu_stages
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
            "cpu_ms_per_frame_by_stage": {k: round(v * 1000 / len(ids), 2)
                                          for k, v in sorted(cpu_stages.cpu_s.items())},
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
    parser.add_argument("--defect-share", type=float, default=0.05,
                        help="share of defective frames in the line-like stream (default 5%%)")
    parser.add_argument("--all-frames", action="store_true",
                        help="the product's test images as they are (about half defective)")
    parser.add_argument("--context", action=argparse.BooleanOptionalAction, default=None,
                        help="score with the line context (default: CLAD_LINE_CONTEXT, on)")
    args = parser.parse_args()
    base = load_settings()
    backend = args.backend or base.model.backend
    product = discover(DATA / "bottle", shots=4)[0]
    # threshold calibrated from the references; the same backend the worker would use
    requests = args.requests or base.model.infer_requests
    engines = build_engines([product], backend=backend, max_batch=32, requests=requests)
    context = base.context.line_context if args.context is None else args.context
    if context:
        engines = with_context(engines, base, requests)
    if args.all_frames:
        paths = (product.frames * (args.frames // len(product.frames) + 1))[:args.frames]
    else:
        paths = line_stream(product.frames, args.frames, args.defect_share)
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
                   "backlog_cpu_ms_per_frame_by_stage": thr["cpu_ms_per_frame_by_stage"],
                   "line_context": context_stats(engines["bottle"]),
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
            print(f"  CPU ms/frame by stage: {thr['cpu_ms_per_frame_by_stage']}; line context: "
                  f"{row['line_context']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "frame": f"mvtec-sample/bottle 900x900, published as {args.encoding.upper()}"
                 + (" (quality 95)" if args.encoding == "jpeg" else " (the files)"),
        "stream": "test images as they are" if args.all_frames
                  else f"line-like, {args.defect_share:.0%} defective",
        "line_context": bool(context),
        "engine": f"CLAD k-shot (4 refs) efficientnet-lite0, backend {backend}, "
                  f"requests {requests or 'default'}",
        "load_average": os.getloadavg(), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
