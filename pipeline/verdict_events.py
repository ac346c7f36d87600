"""Consumer-side SDK for the verdicts topic: each frame's verdict event exactly once.

The worker publishes a batch's events after its verdicts are durable and before it
commits the frames' offsets. A worker that dies between the two (or whose commit is
refused by a rebalance) has its batch redone by another worker: the database keeps
one verdict per frame, but the events of that batch are published again. Kafka
transactions would make them exactly-once, but the bundled broker (Tansu) hands
aborted transactional records to read_committed consumers, so this project relies
on the rule every consumer of the topic follows instead: de-duplicate by frame id
(the `clad-frame-id` header, also `frame_id` in the JSON value).

    with VerdictEventReader(settings.kafka, group_id="mes-bridge") as reader:
        for event in reader:          # each frame id at most once per reader
            handle(event)

A redelivered event is identical in everything but `decided_at`, and follows the
first one closely (it comes from the same or the next batch of that partition), so
a bounded memory of recent ids is enough.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.kafka_io import bootstrap
from pipeline.settings import KafkaSettings

H_EVENT_FRAME_ID = "clad-frame-id"


class RecentIds:
    """The last `capacity` ids seen; `add` is False for an id already among them."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, frame_id: str) -> bool:
        if frame_id in self._ids:
            self._ids.move_to_end(frame_id)
            return False
        self._ids[frame_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def event_frame_id(record: ConsumerRecord) -> str | None:
    """The frame a verdict event is about; None for events about no one frame (e.g. a
    product's `context_drift` alert)."""
    for key, value in record.headers or []:
        if key == H_EVENT_FRAME_ID and value:
            return value.decode()
    frame_id = json.loads(record.value).get("frame_id")  # events written before the header
    return None if frame_id is None else str(frame_id)


def unique_events(records: Iterable[ConsumerRecord], seen: RecentIds | None = None
                  ) -> Iterator[dict[str, Any]]:
    """The JSON payloads of `records`, each frame id once; events without a frame id
    (product alerts) pass through as they come."""
    seen = seen or RecentIds()
    for record in records:
        frame_id = event_frame_id(record)
        if frame_id is None or seen.add(frame_id):
            yield json.loads(record.value)


class VerdictEventReader:
    """A consumer of the verdicts topic that yields each frame's event once."""

    def __init__(self, settings: KafkaSettings, *, group_id: str | None,
                 capacity: int = 100_000, **consumer_options: Any) -> None:
        self._consumer = KafkaConsumer(
            settings.topic_verdicts, bootstrap_servers=bootstrap(settings), group_id=group_id,
            auto_offset_reset="earliest", **consumer_options)
        self._seen = RecentIds(capacity)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return unique_events(self._consumer, self._seen)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> VerdictEventReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
