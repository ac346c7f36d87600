"""Prometheus metrics of one inference worker, on its own registry.

Consumer lag is high watermark - position per partition, the watermark taken
from fetch responses (no extra round trip; also right on the Tansu test broker,
whose end_offsets() is not: tests/integration/test_kafka_broker.py).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from workers.streaming.liveness import Liveness

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

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
        # read from the worker's Liveness when served (serve); an alert where no probe
        # restarts a hung worker (compose)
        self.silent = Gauge("clad_worker_silent_seconds", "Seconds since the worker's loop "
                            "last made progress (/healthz fails past CLAD_STALL_AFTER_S)",
                            registry=r)  # fmt: skip

    def record_context(self, product: str, engine: object) -> None:
        """Drift and size of the engine's line context, when it has one."""
        line = getattr(engine, "line_context", None)
        if line is not None:
            self.context_drift.labels(product).set(line.drift)
            self.context_frames.labels(product).set(len(line))

    def serve(self, port: int, liveness: Liveness | None = None, *,
              host: str = "0.0.0.0") -> WSGIServer | None:
        """Expose /metrics, and /healthz (503 once `liveness` is stalled), on host:port
        from a daemon thread; port 0 leaves the endpoint off (tests, the demo)."""
        if not port:
            return None
        if liveness is not None:
            self.silent.set_function(liveness.silent_for)
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        server = make_server(host, port, health_app(self.registry, liveness),
                             server_class, handler_class=_QuietHandler)  # fmt: skip
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics on http://%s:%s/metrics, liveness on /healthz", shown,
                 server.server_port)
        return server


def health_app(registry: CollectorRegistry, liveness: Liveness | None) -> WsgiApp:
    """/healthz: 200 while the worker makes progress, 503 once it has not for its stall
    bound; any other path: the Prometheus exposition."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)
        if liveness is not None and liveness.stalled():
            status = "503 Service Unavailable"
            body = (f"stalled: no progress for {liveness.silent_for():.0f} s (bound "
                    f"{liveness.stall_after_s:g} s)\n").encode()  # fmt: skip
        else:
            status, body = "200 OK", b"ok\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds the worker's exit


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a line per probe and scrape would drown the worker's own log
