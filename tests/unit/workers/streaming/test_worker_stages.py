"""The worker's two stages: offsets move only after the delivery thread has stored a
batch, on the consumer's own thread, and a failed or stopped delivery commits nothing."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from pipeline.settings import load_settings
from workers.streaming.worker import InferenceWorker, _InFlight

pytestmark = pytest.mark.unit

TP = TopicPartition("frames", 0)


def _record(offset: int) -> ConsumerRecord:
    return ConsumerRecord("frames", 0, None, offset, 0, 0, b"k", b"v", [], None, 1, 1, -1)


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.pauses = 0
        self.on_pause = lambda: None
        self.commit_errors: list[Exception] = []  # raised by the next commits, in order
        self.commit_calls = 0
        self.poll_timeouts: list[int] = []
        self.poll_returns: dict = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def commit(self, offsets: dict) -> None:
        self.commit_calls += 1
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def pause(self, *_tps: TopicPartition) -> None:
        self.pauses += 1
        self.on_pause()

    def paused(self) -> set[TopicPartition]:
        return set()

    def resume(self, *_tps: TopicPartition) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> dict:
        self.poll_timeouts.append(timeout_ms)
        returned, self.poll_returns = self.poll_returns, {}
        return returned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

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


@pytest.mark.parametrize("error", [RebalanceInProgressError(), CommitFailedError(),
                                   IllegalGenerationError(), UnknownMemberIdError()])
def test_a_commit_refused_by_a_rebalance_is_given_up_not_retried(worker: InferenceWorker,
                                                                 error: Exception) -> None:
    # Retrying before the next poll() rejoins the group livelocks every member (issue 19).
    worker.consumer.commit_errors = [error, error, error]
    delivered: Future[bool] = Future()
    delivered.set_result(True)
    worker.in_flight = _InFlight([_record(5)], delivered)
    assert worker._settle() is False
    assert worker.consumer.commit_calls == 1 and worker.consumer.commits == []
    assert worker.metrics.commits_abandoned._value.get() == 1
    # The next batch's commit goes through and covers the partition.
    delivered2: Future[bool] = Future()
    delivered2.set_result(True)
    worker.consumer.commit_errors = []
    worker.in_flight = _InFlight([_record(6)], delivered2)
    assert worker._settle() is True and worker.consumer.commits == [{TP: 7}]


def test_transient_commit_errors_are_retried_a_bounded_number_of_times(
        worker: InferenceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker.retrier.stop, "wait", lambda _s: False)  # no real sleeping
    worker.consumer.commit_errors = [NodeNotReadyError()]
    assert worker._commit([_record(1)]) is True  # one transient failure: retried
    assert worker.consumer.commits == [{TP: 2}]
    attempts = worker.settings.worker.commit_attempts
    worker.consumer.commit_errors = [KafkaTimeoutError()] * (attempts + 3)
    calls = worker.consumer.commit_calls
    assert worker._commit([_record(2)]) is False
    assert worker.consumer.commit_calls - calls == attempts  # then given up: back to polling


def test_keep_alive_poll_lets_a_rejoin_finish_and_never_skips_records(
        worker: InferenceWorker) -> None:
    other = TopicPartition("frames", 1)
    # A partition assigned during the keep-alive poll is not paused and returns records:
    # the worker must seek back to them, or the next commit would move past them unread.
    worker.consumer.poll_returns = {other: [_record(40), _record(41)]}
    worker._keep_membership()
    assert worker.consumer.poll_timeouts[-1] >= 10  # timeout 0 never completes a rejoin
    assert worker.consumer.seeks == [(other, 40)]
