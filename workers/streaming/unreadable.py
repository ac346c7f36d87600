"""Records the Kafka client cannot parse: a DLQ record names them and the worker moves on.

kafka-python parses a fetched batch inside poll(). A record it cannot read (a header key
that is not UTF-8, a checksum that fails) raises there, on every poll, at the same
offset: one such record stopped the worker, and every worker that took its partition
after it. Its bytes cannot be had through the client either, so the DLQ record carries
where it lies (topic/partition/offset, within the frames topic's retention) and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CorruptRecordError

log = logging.getLogger(__name__)

# What parsing a fetched record raises in kafka-python 3.0.12 (pinned in pyproject.toml).
UNREADABLE_ERRORS = (UnicodeDecodeError, CorruptRecordError)


@dataclass(frozen=True)
class UnreadableRecord:
    topic: str
    partition: int
    offset: int
    detail: str


class RecordSource(Protocol):
    def poll(self, *, timeout_ms: int, max_records: int
             ) -> dict[TopicPartition, list[ConsumerRecord]]: ...


def unreadable_partition(consumer: KafkaConsumer) -> TopicPartition | None:
    """The partition whose records the client was parsing when it raised. No public API
    names it; kafka-python 3.0.12's fetcher keeps it as its next-in-line records
    (tests/integration/test_pipeline_faults.py fails if a new version moves it)."""
    fetcher = getattr(consumer, "_fetcher", None)
    in_line = getattr(fetcher, "_next_partition_records", None)
    return getattr(in_line, "topic_partition", None)


class PastUnreadable:
    """consumer.poll() that steps over an unreadable record once `report` made it durable
    (report returns False when the worker is stopping: the record is read again later)."""

    def __init__(self, consumer: KafkaConsumer,
                 report: Callable[[UnreadableRecord], bool]) -> None:
        self.consumer, self.report = consumer, report

    def poll(self, **poll_args: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """consumer.poll(**poll_args) (timeout_ms, max_records)."""
        try:
            return self.consumer.poll(**poll_args)
        except UNREADABLE_ERRORS as exc:
            tp = unreadable_partition(self.consumer)
            if tp is None:
                raise
            offset = self.consumer.position(tp)
            record = UnreadableRecord(tp.topic, tp.partition, offset,
                                      f"the Kafka client cannot parse this record "
                                      f"({type(exc).__name__}: {exc})"[:1000])
            log.warning("record %s/%s/%s unreadable, to DLQ and skipped: %s", tp.topic,
                        tp.partition, offset, record.detail)
            if self.report(record):
                # Positions only: the offset commit after the next batch covers it.
                self.consumer.seek(tp, offset + 1)
            return {}
