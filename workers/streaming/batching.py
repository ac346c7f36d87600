"""Micro-batches from a consumer: up to batch_size records or max_wait_ms, whichever first."""

from __future__ import annotations

import time
from collections.abc import Sequence

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from workers.streaming.unreadable import RecordSource


def collect_batch(consumer: RecordSource, *, batch_size: int, max_wait_ms: int,
                  idle_poll_ms: int = 500) -> list[ConsumerRecord]:
    """Block until a first record arrives (at most idle_poll_ms), then fill the batch.

    The max_wait_ms clock starts at the first record, not at the call: an idle
    line does not spin, and a busy one never holds a frame longer than max_wait_ms.
    """
    batch: list[ConsumerRecord] = []
    deadline: float | None = None
    while len(batch) < batch_size:
        if deadline is None:
            timeout_ms = idle_poll_ms
        else:
            timeout_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        polled = consumer.poll(timeout_ms=timeout_ms, max_records=batch_size - len(batch))
        for records in polled.values():
            batch.extend(records)
        if deadline is None:
            if not batch:
                return batch
            deadline = time.monotonic() + max_wait_ms / 1000.0
        if time.monotonic() >= deadline:
            break
    return batch


def next_offsets(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once every record of the batch is durable: last + 1 per partition."""
    highest: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        highest[tp] = max(highest.get(tp, -1), r.offset)
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in highest.items()}
