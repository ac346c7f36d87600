"""Builds a worker from settings and runs it until SIGTERM/SIGINT (`clad worker`)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping

import cv2

from pipeline.kafka_io import build_consumer, build_producer, ensure_topics
from pipeline.region_cache import make_region_cache
from pipeline.settings import Settings
from pipeline.storage.database import make_engine, make_session_factory
from workers.metrics import WorkerMetrics
from workers.reload import ModelWatcher
from workers.scoring import ScoringEngine, context_config, load_engines, load_trained
from workers.worker import InferenceWorker

log = logging.getLogger(__name__)


def build_worker(settings: Settings, engines: Mapping[str, ScoringEngine] | None = None,
                 stop: threading.Event | None = None) -> InferenceWorker:
    # Decode and heatmap work is spread over the worker's own thread pool; OpenCV's
    # internal threads on top of it only oversubscribe the cores the engine needs.
    cv2.setNumThreads(1)
    engines = dict(engines) if engines is not None else load_engines(settings)
    db = settings.database
    factory = make_session_factory(make_engine(
        db.database_url, pool_size=db.db_pool_size, connect_timeout_s=db.db_connect_timeout_s))
    watcher = None
    if not settings.worker.engine_factory:
        override, model = settings.model.anomaly_threshold, settings.model
        watcher = ModelWatcher(
            factory, lambda path, product: load_trained(
                path, product, override, backend=model.backend,
                max_batch=settings.worker.batch_size,
                context=context_config(settings.context))[1],
            interval_s=settings.worker.model_check_interval_s)
    metrics = WorkerMetrics()
    metrics.serve(settings.worker.metrics_port)
    return InferenceWorker(
        settings, engines,
        consumer=build_consumer(settings.kafka, max_poll_records=settings.worker.batch_size),
        producer=build_producer(settings.kafka, client_id="clad-worker"),
        session_factory=factory,
        cache=make_region_cache(settings.redis.redis_url, settings.redis.cache_ttl_s),
        metrics=metrics, stop=stop, between_batches=watcher)


def run_worker(settings: Settings) -> None:
    """Run in the foreground; the first SIGTERM/SIGINT finishes the batch and leaves."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the current batch, then leaving the group", signum)
        stop.set()

    # kafka-python logs every connection at INFO; its warnings are what an operator needs.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ensure_topics(settings.kafka)
    build_worker(settings, stop=stop).run()
