"""`clad demo`: the whole path on one machine, on embedded defaults.

Embedded Tansu broker (in memory: it keeps nothing across a restart; set
CLAD_BOOTSTRAP_SERVERS for a real Kafka), a fresh SQLite database migrated by
Alembic, one worker thread serving a k-shot CLAD model per product built from
reference images, and a producer publishing the rest of the images. Exits 0
only if every published frame has exactly one verdict.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from engine.defects import rle
from pipeline.broker import EmbeddedBroker
from pipeline.heatmap_codec import decode_heatmap, render_overlay
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher, publish_images
from pipeline.settings import EMBEDDED_BROKER, DatabaseSettings, Settings
from pipeline.storage.database import make_engine, make_session_factory
from pipeline.storage.migrate import upgrade
from pipeline.storage.queries_pipeline import verdict_counts, verdicts_for
from workers.demo.console_hint import new_run_folder, print_console_hint
from workers.demo.data import DemoProduct, discover, drawn_kind, load_rgb, synthetic_parts
from workers.demo.learning import halves, learning_pass
from workers.streaming.runner import build_worker
from workers.streaming.scoring import CladRuntimeEngine, ScoringEngine, default_for, load_trained

log = logging.getLogger(__name__)


def build_engines(products: list[DemoProduct], threshold: float | None = None,
                  model_dir: Path | None = None, backend: str = "torch",
                  max_batch: int = 32, requests: int | None = None) -> dict[str, ScoringEngine]:
    """A trained model from model_dir when the product has one, else a k-shot model
    from its references. Thresholds are calibrated per product (with the model, or
    from the references by engine.scoring.kshot_calibration); `threshold` overrides both."""
    from engine.runtime.select import make_backend
    from engine.scoring.builder import ScoringConfig
    from engine.scoring.kshot_calibration import calibrated_runtime
    from engine.scoring.visual_encoder import VisualEncoder

    # No shifted copies of the references: the bank stays under max_bank, so no
    # greedy core-set (minutes on 2 busy cores) and nearest-neighbour search stays cheap.
    config = ScoringConfig(aug_shifts=())
    encoder = VisualEncoder(config.backbone, config.stages)  # one pretrained load for all
    engines: dict[str, ScoringEngine] = {}
    for p in products:
        if model_dir is not None and (model_dir / p.name).is_dir():
            engines[p.name] = load_trained(model_dir, p.name, threshold, backend=backend,
                                           max_batch=max_batch, requests=requests)[1]
            continue
        runtime, calibrated = calibrated_runtime([load_rgb(r) for r in p.references], config,
                                                 encoder)
        runner = None if backend == "torch" else make_backend(
            backend, runtime, max_batch=max_batch, requests=requests)  # type: ignore[arg-type]
        describer, describer_encoder = default_for(runtime)  # a k-shot model has no words
        engines[p.name] = CladRuntimeEngine(
            runtime, threshold=calibrated.value if threshold is None else threshold,
            version=f"demo-{p.name}-{len(p.references)}shot", backend=runner,
            pixel_threshold=calibrated.pixel, describer=describer,
            describer_encoder=describer_encoder)
    return engines


def _demo_settings(settings: Settings, bootstrap: str, out: Path) -> Settings:
    db = settings.database
    if db.database_url == DatabaseSettings.model_fields["database_url"].default:
        # In the run's own folder, absolute: the printed console commands work anywhere.
        db = db.model_copy(update={"database_url": f"sqlite:///{(out / 'demo.db').resolve()}"})
    # model checks every second: the learning pass waits for the new describers
    worker = settings.worker.model_copy(update={"metrics_port": 0, "engine_factory": None,
                                                "model_check_interval_s": 1.0})
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return settings.model_copy(update={"kafka": kafka, "database": db, "worker": worker})


def run_demo(settings: Settings, *, images: Path | None, out: Path, shots: int,
             max_per_product: int | None, timeout_s: float = 900.0) -> int:
    console = Console()
    for noisy in ("kafka", "alembic"):  # connection / migration chatter would bury the table
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = new_run_folder(out)  # this run's database, overlays and frames, kept apart
    products = (discover(images, shots, max_per_product) if images is not None
                else synthetic_parts(out, shots))
    summary = ", ".join(f"{p.name} ({len(p.frames)} frames, {len(p.references)} references)"
                        for p in products)
    console.print(f"products: {summary}")
    with ExitStack() as stack:
        bootstrap = settings.kafka.bootstrap_servers
        if bootstrap == EMBEDDED_BROKER:
            broker = stack.enter_context(EmbeddedBroker(log_path=out / "tansu.log"))
            bootstrap = broker.bootstrap_servers
            console.print(f"embedded Kafka-protocol broker (Tansu, in memory: nothing survives "
                          f"its restart) on {bootstrap}")
        demo = _demo_settings(settings, bootstrap, out)
        engine = make_engine(demo.database.database_url)
        upgrade(engine)
        factory = make_session_factory(engine)
        console.print(f"database {engine.url.render_as_string(hide_password=True)} migrated")
        console.print("building a k-shot CLAD model per product, threshold calibrated on "
                      "its references ...")
        engines = build_engines(products, settings.model.anomaly_threshold,
                                settings.model.model_dir, backend=settings.model.backend,
                                max_batch=settings.worker.batch_size,
                                requests=settings.model.infer_requests)
        console.print("thresholds: " + ", ".join(f"{name} {e.threshold:.3f}"
                                                 for name, e in engines.items()))
        ensure_topics(demo.kafka)
        stop = threading.Event()
        worker = build_worker(demo, engines, stop=stop)
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        names: dict[uuid.UUID, tuple[str, Path]] = {}
        with FramePublisher(demo.kafka) as publisher:
            for p in products:
                images_of = ((str(f), f.read_bytes()) for f in p.frames)
                report = publish_images(publisher, images_of, camera_id=f"cam-{p.name}",
                                        line_id="demo-line", product=p.name, progress=True)
                names.update({fid: (p.name, Path(n)) for n, fid in report.frame_ids.items()})
        console.print(f"published {len(names)} frames; waiting for verdicts ...")
        counts = _wait_for_verdicts(factory, list(names), timeout_s, thread)
        status = _report(console, factory, names, counts, out)
        if halves(names)[0]:  # defect folders to learn from (issue 29: the learning pass)
            learning_pass(console, demo, engine, factory, worker, products, names, out,
                          lambda ids: _wait_for_verdicts(factory, ids, timeout_s, thread))
        stop.set()
        thread.join(timeout=30)
        print_console_hint(console, settings, demo.database.database_url, out)
        return status


def _wait_for_verdicts(factory, frame_ids: list[uuid.UUID], timeout_s: float,  # noqa: ANN001
                       thread: threading.Thread) -> dict[uuid.UUID, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        with factory() as session:
            counts = verdict_counts(session, frame_ids)
        if len(counts) == len(frame_ids) or time.monotonic() > deadline or not thread.is_alive():
            return counts
        time.sleep(0.5)


def _region_name(region, default: str = "region") -> str:  # noqa: ANN001 - a Region row
    if region.description:
        return region.description
    return "hottest area" if region.fallback else default


def drawn_scorecard(verdicts: list, names: dict[uuid.UUID, tuple[str, Path]]
                    ) -> dict[str, int] | None:
    """For the synthetic parts, whose file names carry the kind drawn: how many of the
    drawn defects' first regions were named (not "unclear defect") and named right
    (the generic kind whose phrasing the description is, or the first of a group
    answer's two, "a scratch or a cut"), and how many of the right ones were such group
    answers. None for other images."""
    from engine.defects.describer import HEDGE
    from engine.defects.describer_artifacts import DEFAULT_DIR, GENERIC
    from engine.defects.vocabulary import load_vocabulary

    vocab = load_vocabulary(GENERIC, model_dir=DEFAULT_DIR)  # the default describer's words
    phrases, owner = vocab.phrases()
    keys = vocab.keys
    kind_of = {text: keys[k] for text, k in zip(phrases, owner, strict=True)}
    total = named = right = hedged = 0
    for v in verdicts:
        kind = drawn_kind(names[v.frame_id][1])
        if kind is None:
            continue
        total += 1
        text = v.regions[0].description if v.regions else None
        said = kind_of.get(text) if text else None
        group_answer = said is None and text is not None and HEDGE in text
        if group_answer:
            said = kind_of.get(text.split(HEDGE)[0])
        named += said is not None
        right += said == kind
        hedged += said == kind and group_answer
    return ({"right": right, "hedged": hedged, "named": named, "total": total} if total
            else None)  # fmt: skip


def _report(console: Console, factory, names: dict[uuid.UUID, tuple[str, Path]],  # noqa: ANN001
            counts: dict[uuid.UUID, int], out: Path) -> int:
    overlays = out / "overlays"
    overlays.mkdir(exist_ok=True)
    table = Table(title="clad demo: one verdict per frame")
    for column in ("frame", "score", "threshold", "verdict", "regions"):
        table.add_column(column, overflow="fold")
    with factory() as session:
        verdicts = sorted(verdicts_for(session, list(names)),
                          key=lambda v: (names[v.frame_id][0], str(names[v.frame_id][1])))
    for v in verdicts:
        product, path = names[v.frame_id]
        regions = [f"#{r.index} {_region_name(r)}"
                   + (f" ({r.confidence:.2f})" if r.confidence is not None else "")
                   + (" [hottest area]" if r.fallback and r.description else "")
                   + f" {r.bbox_w}x{r.bbox_h}@{r.bbox_x},{r.bbox_y}" for r in v.regions]
        style = "red" if v.label == "anomalous" else "green"
        table.add_row(f"{product}/{path.parent.name}/{path.name}", f"{v.score:.3f}",
                      f"{v.threshold:.2f}", f"[{style}]{v.label}[/]",
                      "; ".join(regions[:3]) + (f" (+{len(regions) - 3})" if len(regions) > 3
                                                else ""))
        if v.heatmap is not None:
            heat = decode_heatmap(v.heatmap.data, v.heatmap.max_value)
            frame = load_rgb(path)
            size = (frame.shape[1], frame.shape[0])
            masks = [cv2.resize(rle.decode(r.mask_rle).astype(np.uint8), size,
                                interpolation=cv2.INTER_NEAREST) for r in v.regions]
            png = render_overlay(frame, heat, threshold=v.threshold,
                                 boxes=[(r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h)
                                        for r in v.regions], masks=masks,
                                 labels=[_region_name(r, "") for r in v.regions])
            (overlays / f"{product}__{path.parent.name}__{path.stem}.png").write_bytes(png)
    console.print(table)
    drawn = drawn_scorecard(verdicts, names)
    if drawn is not None:
        console.print("drawn defects (first region): {right} named right ({hedged} of them "
                      "first of two kinds: 'a scratch or a cut'), {named} named, {total} "
                      "drawn".format(**drawn))
    missing = [fid for fid in names if fid not in counts]
    doubled = [fid for fid, n in counts.items() if n != 1]
    console.print(f"heatmap overlays: {overlays.resolve()}")
    console.print(f"{len(names)} frames published, {len(counts)} with a verdict, "
                  f"{len(missing)} missing, {len(doubled)} with more than one")
    return 0 if names and not missing and not doubled else 1
