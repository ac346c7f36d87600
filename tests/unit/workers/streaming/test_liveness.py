"""The worker's liveness: beats on progress and on retries of an outage, never while it
waits on a delivery that does not finish; /healthz turns 503 past the stall bound."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.settings import WorkerSettings, load_settings
from tests.unit.workers.streaming.test_worker_stages import FakeConsumer, _record
from workers.streaming.liveness import Liveness
from workers.streaming.metrics import WorkerMetrics, health_app
from workers.streaming.worker import InferenceWorker, _InFlight

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_goes_stale_only_after_its_bound_without_a_beat() -> None:
    clock = Clock()
    live = Liveness(60, clock)
    clock.now += 60
    assert not live.stalled() and live.silent_for() == 60
    clock.now += 1
    assert live.stalled()
    live.beat()
    assert not live.stalled() and live.silent_for() == 0
    with pytest.raises(ValueError, match="stall_after_s must be positive"):
        Liveness(0)


def _call(app: Any, path: str) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, _headers: list) -> None:
        seen["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
                        start_response))  # fmt: skip
    return seen["status"], body.decode()


def test_healthz_is_503_once_stalled_and_metrics_carry_the_silence() -> None:
    clock = Clock()
    live = Liveness(30, clock)
    metrics = WorkerMetrics()
    metrics.silent.set_function(live.silent_for)
    app = health_app(metrics.registry, live)
    assert _call(app, "/healthz") == ("200 OK", "ok\n")
    clock.now += 45
    status, body = _call(app, "/healthz")
    assert status.startswith("503") and "no progress for 45 s (bound 30 s)" in body
    status, body = _call(app, "/metrics")
    assert status.startswith("200") and "clad_worker_silent_seconds 45.0" in body
    assert _call(health_app(metrics.registry, None), "/healthz")[0] == "200 OK"


@pytest.fixture
def worker_and_clock() -> tuple[InferenceWorker, Clock]:
    clock = Clock()
    settings = load_settings().model_copy(
        update={"worker": WorkerSettings(max_backoff_s=0.01)})  # quick retries
    w = InferenceWorker(settings, {}, consumer=FakeConsumer(),  # type: ignore[arg-type]
                        producer=SimpleNamespace(), session_factory=None,  # type: ignore[arg-type]
                        cache=None,  # type: ignore[arg-type]
                        liveness=Liveness(settings.worker.stall_after_s, clock))
    yield w, clock
    w.delivery.shutdown(wait=True)
    w.pool.shutdown(wait=True)


def test_a_retried_outage_beats(worker_and_clock: tuple[InferenceWorker, Clock]) -> None:
    worker, clock = worker_and_clock
    failures = [ConnectionError("database down")] * 3

    def store() -> str:
        clock.now += 400  # each attempt hangs a while before it fails
        if failures:
            raise failures.pop()
        return "stored"

    for retrier in (worker.retrier, worker.delivery_retrier):
        failures[:] = [ConnectionError("database down")] * 3
        clock.now += 10_000
        assert retrier.call("database", store, (ConnectionError,)) == (True, "stored")
        # the last retry beat; the successful attempt after it took 400 s
        assert worker.liveness.silent_for() == 400 and not worker.liveness.stalled()


def test_waiting_on_a_delivery_that_never_ends_does_not_beat(
        worker_and_clock: tuple[InferenceWorker, Clock]) -> None:
    """_settle keeps the group membership while it waits: a hung delivery must still
    go stale, or the probe would keep a worker that holds its partitions and does
    nothing."""
    worker, clock = worker_and_clock
    delivered: Future[bool] = Future()
    worker.in_flight = _InFlight([_record(5)], delivered)
    silences = []

    def keep_alive_poll() -> None:  # each keep-alive poll: four minutes of waiting
        clock.now += 240
        silences.append(worker.liveness.silent_for())
        if len(silences) == 3:
            delivered.set_result(True)

    worker.consumer.on_pause = keep_alive_poll
    assert worker._settle() is True
    assert silences == [240.0, 480.0, 720.0]
    assert worker.liveness.stalled()  # 12 minutes, past the default 10


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_metrics_endpoint_binds_the_configured_address(host: str) -> None:
    import socket
    import urllib.request

    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = WorkerMetrics().serve(port, Liveness(30), host=host)
    assert server is not None
    try:
        assert server.server_address[0] == host
        url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == b"ok\n"
    finally:
        server.shutdown()
        server.server_close()
    assert WorkerMetrics().serve(0, host=host) is None  # port 0: no endpoint
