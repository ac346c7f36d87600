"""The worker's two stages: offsets move only after the delivery thread has stored a
batch, on the consumer's own thread, and a failed or stopped delivery commits nothing."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.settings import load_settings
from workers.worker import InferenceWorker, _InFlight

pytestmark = pytest.mark.unit

TP = TopicPartition("frames", 0)


def _record(offset: int) -> ConsumerRecord:
    return ConsumerRecord("frames", 0, None, offset, 0, 0, b"k", b"v", [], None, 1, 1, -1)


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.pauses = 0
        self.on_pause = lambda: None

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def commit(self, offsets: dict) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def pause(self, *_tps: TopicPartition) -> None:
        self.pauses += 1
        self.on_pause()

    def paused(self) -> set[TopicPartition]:
        return set()

    def resume(self, *_tps: TopicPartition) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> dict:
        return {}

    def highwater(self, _tp: TopicPartition) -> int:
        return 10

    def position(self, _tp: TopicPartition) -> int:
        return 8


@pytest.fixture
def worker() -> InferenceWorker:
    w = InferenceWorker(load_settings(), {}, consumer=FakeConsumer(),  # type: ignore[arg-type]
                        producer=SimpleNamespace(), session_factory=None,  # type: ignore[arg-type]
                        cache=None)  # type: ignore[arg-type]
    yield w
    w.delivery.shutdown(wait=True)
    w.pool.shutdown(wait=True)


def test_offsets_committed_after_delivery_as_last_plus_one(worker: InferenceWorker) -> None:
    delivered: Future[bool] = Future()
    worker.in_flight = _InFlight([_record(5), _record(7)], delivered)
    delivered.set_result(True)
    assert worker._settle() is True
    assert worker.consumer.commits == [{TP: 8}]
    assert worker.in_flight is None and worker.batches == 1
    assert worker._settle() is False  # nothing in flight: nothing more to commit
    assert worker.consumer.commits == [{TP: 8}]


def test_a_stopped_delivery_commits_nothing(worker: InferenceWorker) -> None:
    delivered: Future[bool] = Future()
    delivered.set_result(False)  # the delivery retrier gave up because the worker stops
    worker.in_flight = _InFlight([_record(5)], delivered)
    assert worker._settle() is False
    assert worker.consumer.commits == [] and worker.batches == 0


def test_an_error_in_delivery_is_raised_on_the_consumer_thread(worker: InferenceWorker) -> None:
    delivered: Future[bool] = Future()
    delivered.set_exception(RuntimeError("integrity error"))
    worker.in_flight = _InFlight([_record(5)], delivered)
    with pytest.raises(RuntimeError, match="integrity error"):
        worker._settle()
    assert worker.consumer.commits == []


def test_membership_kept_alive_while_a_delivery_is_retried(worker: InferenceWorker) -> None:
    delivered: Future[bool] = Future()
    # The delivery finishes only once the worker has polled (paused) to keep its group
    # membership: _settle must not block on the result without doing so.
    worker.consumer.on_pause = lambda: delivered.done() or delivered.set_result(True)
    worker.in_flight = _InFlight([_record(2)], delivered)
    assert worker._settle() is True
    assert worker.consumer.pauses >= 1 and worker.consumer.commits == [{TP: 3}]


def test_hand_off_settles_the_previous_batch_before_submitting(worker: InferenceWorker,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    order: list[str] = []

    def deliver(batch: SimpleNamespace) -> bool:
        order.append(f"deliver {batch.name}")
        return True

    monkeypatch.setattr(worker, "_deliver_batch", deliver)
    original_commit = worker.consumer.commit

    def commit(offsets: dict) -> None:
        order.append(f"commit {next(iter(offsets.values())).offset}")
        original_commit(offsets)

    worker.consumer.commit = commit  # type: ignore[method-assign]
    worker._hand_off(SimpleNamespace(name="A", records=[_record(1)]))  # type: ignore[arg-type]
    worker._hand_off(SimpleNamespace(name="B", records=[_record(2)]))  # type: ignore[arg-type]
    assert worker._settle() is True
    assert order == ["deliver A", "commit 2", "deliver B", "commit 3"]
