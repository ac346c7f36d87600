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
from workers.streaming.liveness import Liveness
from workers.streaming.metrics import WorkerMetrics
from workers.streaming.reload import ModelWatcher
from workers.streaming.scoring import ScoringEngine, context_config, load_engines, load_trained
from workers.streaming.worker import InferenceWorker

log = logging.getLogger(__name__)


def build_worker(settings: Settings, engines: Mapping[str, ScoringEngine] | None = None,
                 stop: threading.Event | None = None) -> InferenceWorker:
    # Decode and heatmap work is spread over the worker's own thread pool; OpenCV's
    # internal threads on top of it only oversubscribe the cores the engine needs.
    cv2.setNumThreads(1)
    engines = dict(engines) if engines is not None else load_engines(settings)
    factory = make_session_factory(engine_from_settings(settings.database))
    watcher = None
    if not settings.worker.engine_factory:
        override, model = settings.model.anomaly_threshold, settings.model
        watcher = ModelWatcher(
            factory, lambda path, product: load_trained(
                path, product, override, backend=model.backend,
                max_batch=settings.worker.batch_size,
                context=context_config(settings.context), requests=model.infer_requests,
                precision=model.cpu_precision)[1],
            interval_s=settings.worker.model_check_interval_s)
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
    build_worker(settings, stop=stop).run()
