"""Prometheus metrics of one inference worker, on its own registry.

Consumer lag is high watermark - position per partition, the watermark taken
from fetch responses (no extra round trip; also right on the Tansu test broker,
whose end_offsets() is not: tests/integration/test_kafka_broker.py).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("clad_frames_consumed", "Frames read from Kafka", registry=r)
        self.verdicts = Counter("clad_verdicts_written", "New verdicts stored", registry=r)
        self.dlq = Counter("clad_dlq_frames", "Frames sent to the DLQ", ["reason"], registry=r)
        self.anomalies = Counter("clad_anomalies", "Anomalous verdicts", ["camera"], registry=r)
        self.batch_size = Histogram("clad_batch_size", "Frames per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.stage_seconds = Histogram("clad_stage_seconds", "Time per batch stage",
                                       ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.frame_latency = Histogram("clad_frame_latency_seconds",
                                       "Capture timestamp -> verdict stored",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("clad_consumer_lag", "Records behind the end offset",
                         ["partition"], registry=r)
        self.retries = Counter("clad_retries", "Retries after an unavailable dependency",
                               ["dependency"], registry=r)
        self.commits_abandoned = Counter(
            "clad_commits_abandoned", "Offset commits given up (group rebalancing or broker "
            "errors); the frames are redone idempotently", registry=r)
        self.context_drift = Gauge(
            "clad_context_drift", "Share of a product's recent frames above its line-context "
            "admission cut (a jump: a new defect or a changed line)", ["product"], registry=r)
        self.context_frames = Gauge("clad_context_frames", "Frames in a product's line context",
                                    ["product"], registry=r)
        self.model_reloads = Counter("clad_model_reloads", "Engines swapped", ["product"],
                                     registry=r)

    def record_context(self, product: str, engine: object) -> None:
        """Drift and size of the engine's line context, when it has one."""
        line = getattr(engine, "line_context", None)
        if line is not None:
            self.context_drift.labels(product).set(line.drift)
            self.context_frames.labels(product).set(len(line))

    def serve(self, port: int) -> None:
        """Expose /metrics on `port`; 0 leaves the endpoint off (tests, the demo)."""
        if port:
            start_http_server(port, registry=self.registry)
            log.info("metrics on http://0.0.0.0:%s/metrics", port)
