"""The verdicts-topic SDK: each frame's event once, however often a batch was redone."""

from __future__ import annotations

import json

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.verdict_events import H_EVENT_FRAME_ID, RecentIds, unique_events

pytestmark = pytest.mark.unit


def _event(frame_id: str, *, header: bool = True, decided: str = "t1") -> ConsumerRecord:
    value = json.dumps({"frame_id": frame_id, "decided_at": decided}).encode()
    headers = [(H_EVENT_FRAME_ID, frame_id.encode())] if header else []
    return ConsumerRecord("verdicts", 0, None, 0, 0, 0, b"cam", value, headers, None, 1,
                          len(value), -1)


def test_a_redone_batch_yields_each_frame_once_in_first_seen_order() -> None:
    records = [_event("a"), _event("b"), _event("a", decided="t2"), _event("c"),
               _event("b", header=False, decided="t2")]  # an event from before the header
    events = list(unique_events(records))
    assert [e["frame_id"] for e in events] == ["a", "b", "c"]
    assert [e["decided_at"] for e in events] == ["t1", "t1", "t1"]


def test_product_alerts_without_a_frame_id_pass_through() -> None:
    value = json.dumps({"event": "context_drift", "product": "bottle"}).encode()
    alert = ConsumerRecord("verdicts", 0, None, 0, 0, 0, b"bottle", value, [], None, 1,
                           len(value), -1)
    events = list(unique_events([_event("a"), alert, alert, _event("a")]))
    assert [e.get("frame_id", e.get("event")) for e in events] == ["a", "context_drift",
                                                                   "context_drift"]


def test_memory_of_ids_is_bounded() -> None:
    seen = RecentIds(capacity=2)
    assert seen.add("a") and seen.add("b") and not seen.add("a")
    assert seen.add("c")  # evicts the least recently seen: b
    assert seen.add("b") and not seen.add("c")
