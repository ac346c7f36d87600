"""Builds a worker from settings and runs it until SIGTERM/SIGINT (`clad worker`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import cv2

from pipeline.kafka_io import build_consumer, build_producer, ensure_topics
from pipeline.region_cache import make_region_cache
from pipeline.settings import Settings
from pipeline.storage.database import engine_from_settings, make_session_factory
from workers.streaming.active_models import EngineLoader, load_active_engines
from workers.streaming.liveness import Liveness
from workers.streaming.metrics import WorkerMetrics
from workers.streaming.reload import ModelWatcher
from workers.streaming.scoring import (
    ScoringEngine,
    check_engines,
    context_config,
    factory_engines,
    load_trained,
)
from workers.streaming.worker import InferenceWorker

log = logging.getLogger(__name__)


def engine_loader(settings: Settings) -> EngineLoader:
    """(path from the DB row, product) -> engine, served as the settings say."""
    model = settings.model

    def load(path: str, product: str) -> ScoringEngine:
        return load_trained(path, product, model.anomaly_threshold, backend=model.backend,
                            max_batch=settings.worker.batch_size,
                            context=context_config(settings.context),
                            requests=model.infer_requests, precision=model.cpu_precision)[1]
    return load


def build_worker(settings: Settings, engines: Mapping[str, ScoringEngine] | None = None,
                 stop: threading.Event | None = None) -> InferenceWorker | None:
    """A worker serving `engines`, or else (CLAD_ENGINE_FACTORY unset) the active version of
    every product as the database names it; None when `stop` is set while it waits for
    the database."""
    # Decode and heatmap work is spread over the worker's own thread pool; OpenCV's
    # internal threads on top of it only oversubscribe the cores the engine needs.
    cv2.setNumThreads(1)
    stop = stop or threading.Event()
    factory = make_session_factory(engine_from_settings(settings.database))
    watcher = None
    if settings.worker.engine_factory:
        engines = dict(engines) if engines is not None else factory_engines(settings)
    else:
        loader = engine_loader(settings)
        if engines is None:
            engines = load_active_engines(factory, loader, stop,
                                          max_backoff_s=settings.worker.max_backoff_s)
            if engines is None:
                return None
        engines = dict(engines)
        watcher = ModelWatcher(factory, loader, interval_s=settings.worker.model_check_interval_s)
    check_engines(engines)
    metrics = WorkerMetrics()
    liveness = Liveness(settings.worker.stall_after_s)
    metrics.serve(settings.worker.metrics_port, liveness, host=settings.worker.metrics_host)
    return InferenceWorker(
        settings, engines,
        consumer=build_consumer(settings.kafka, max_poll_records=settings.worker.batch_size),
        producer=build_producer(settings.kafka, client_id="clad-worker"),
        session_factory=factory,
        cache=make_region_cache(settings.redis.redis_url, settings.redis.cache_ttl_s),
        metrics=metrics, stop=stop, between_batches=watcher, liveness=liveness)


def run_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    """Run in the foreground until `stop` (set by SIGTERM/SIGINT: see
    workers.streaming.shutdown)."""
    stop = stop or threading.Event()
    # kafka-python logs every connection at INFO; its warnings are what an operator needs.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    ensure_topics(settings.kafka, stop=stop)
    if stop.is_set():
        log.info("stopped during start-up")
        return
    worker = build_worker(settings, stop=stop)
    if worker is None:
        log.info("stopped during start-up")
        return
    worker.run()
