"""PastUnreadable: an unparseable record is reported, then stepped over; never lost."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import CorruptRecordError

from workers.streaming.unreadable import PastUnreadable, UnreadableRecord

TP = TopicPartition("frames", 2)


class _Consumer:
    """Raises on poll while its position sits on the bad offset, as kafka-python does."""

    def __init__(self, bad_offset: int, locate: bool = True) -> None:
        self.position_of = {TP: bad_offset}
        self.bad = bad_offset
        self._fetcher = SimpleNamespace(
            _next_partition_records=SimpleNamespace(topic_partition=TP) if locate else None)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        if self.position_of[TP] == self.bad:
            raise CorruptRecordError("Found invalid record structure: UnicodeDecodeError")
        return {TP: ["record"]}

    def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_of[tp] = offset


def test_the_record_is_reported_then_stepped_over() -> None:
    consumer, reported = _Consumer(7), []
    source = PastUnreadable(consumer, lambda r: reported.append(r) or True)
    assert source.poll(timeout_ms=5) == {}
    assert reported == [UnreadableRecord("frames", 2, 7, reported[0].detail)]
    assert "CorruptRecordError" in reported[0].detail
    assert source.poll(timeout_ms=5) == {TP: ["record"]}


def test_a_report_that_did_not_land_leaves_the_record_to_be_read_again() -> None:
    consumer = _Consumer(7)
    source = PastUnreadable(consumer, lambda _r: False)
    assert source.poll() == {}
    assert consumer.position(TP) == 7


def test_an_error_no_partition_can_be_named_for_is_raised() -> None:
    source = PastUnreadable(_Consumer(7, locate=False), lambda _r: True)
    with pytest.raises(CorruptRecordError):
        source.poll()
