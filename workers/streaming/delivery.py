"""Getting a batch's results out durably: DB transaction, Kafka events, with retries.

Every step here either succeeds or keeps retrying with capped exponential
backoff until it does or the worker is told to stop. The caller commits Kafka
offsets only after all of them returned True, so an outage costs time, never a
verdict.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.frames import (
    H_REJECT_DETAIL,
    H_REJECT_REASON,
    H_SOURCE,
    FrameRejectedError,
    RejectReason,
)
from pipeline.settings import ApiSettings
from pipeline.storage.database import transaction
from pipeline.storage.frame_store import store_frames
from pipeline.storage.records import VerdictRecord
from pipeline.storage.repository import write_verdicts
from pipeline.verdict_events import H_EVENT_FRAME_ID
from workers.streaming.isolation import split_failures
from workers.streaming.unreadable import UnreadableRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

# A record in the DLQ keeps the frame's bytes unless they are what got it rejected, and
# its original headers up to this many bytes: a DLQ record must always fit the producer's
# request limit (max_frame_bytes + 64 KiB), or its send would fail, be retried forever,
# and the one bad record would stop the worker after all.
_DLQ_MAX_VALUE = 1024 * 1024
_DLQ_MAX_HEADER_BYTES = 16 * 1024


class Retrier:
    """Retry a call on the given errors with backoff; give up only when `stop` is set."""

    def __init__(self, stop: threading.Event, *, max_backoff_s: float,
                 on_retry: Callable[[str], None] | None = None,
                 while_waiting: Callable[[], None] | None = None) -> None:
        self.stop = stop
        self.max_backoff_s = max_backoff_s
        self.on_retry = on_retry or (lambda _name: None)
        # Called between attempts, e.g. to keep the consumer's group membership alive.
        self.while_waiting = while_waiting or (lambda: None)

    def call(self, name: str, fn: Callable[[], T], errors: tuple[type[BaseException], ...]
             ) -> tuple[bool, T | None]:
        delay = 0.2
        while True:
            try:
                return True, fn()
            except errors as exc:
                if self.stop.is_set():
                    log.warning("%s failed (%s) and the worker is stopping: batch left "
                                "uncommitted for redelivery", name, exc)
                    return False, None
                log.warning("%s failed: %s; retrying in %.1f s", name, _short(exc), delay)
                self.on_retry(name)
                self.while_waiting()
                if self.stop.wait(delay):
                    continue  # one last attempt after a stop request, then give up above
                delay = min(delay * 2, self.max_backoff_s)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def is_transient_db_error(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def is_systemic_db_error(exc: BaseException) -> bool:
    """A database error that is no one frame's fault (a missing table or column, a revoked
    permission): raised, not split per frame, so a misconfigured store stops the worker
    instead of sending every frame to the DLQ. A value the database refuses (DataError)
    or a constraint it violates (IntegrityError) can be one frame's."""
    return isinstance(exc, DBAPIError) and not isinstance(exc, DataError | IntegrityError)


class TransientDatabaseError(Exception):
    pass


def store_verdicts(factory: sessionmaker[Session], records: Sequence[VerdictRecord],
                   frames: Mapping[uuid.UUID, tuple[bytes, str]] | None = None,
                   frame_settings: ApiSettings | None = None) -> int:
    """One transaction for the whole batch; transient errors re-raised as one type.

    `frames` (frame id -> (bytes, content type)) are the originals the console and
    retraining read back; they are kept in the same transaction as the verdicts, so
    a verdict never exists without its frame (mode: ApiSettings.frame_storage).
    """
    try:
        with transaction(factory) as session:
            new = write_verdicts(session, records)
            if frames and frame_settings is not None:
                store_frames(session, frame_settings,
                             [(r.frame_id, *frames[r.frame_id]) for r in records])
            return new
    except DBAPIError as exc:
        if is_transient_db_error(exc):
            raise TransientDatabaseError(_short(exc)) from exc
        raise


class DeliveryStoppedError(Exception):
    """The worker stops while a write is retried: the batch is left for redelivery."""


def store_isolated(retrier: Retrier, factory: sessionmaker[Session],
                   records: Sequence[VerdictRecord],
                   frames: Mapping[uuid.UUID, tuple[bytes, str]],
                   frame_settings: ApiSettings
                   ) -> tuple[int, list[tuple[VerdictRecord, FrameRejectedError]]]:
    """store_verdicts as one transaction, retried through an outage; a batch the database
    refuses is split (workers.streaming.isolation) so only the verdicts it refuses alone
    are left out. Returns (new verdicts, refused ones with their rejection); raises
    DeliveryStoppedError when the worker is stopped during an outage."""
    new = 0

    def store(part: Sequence[VerdictRecord]) -> None:
        nonlocal new
        ok, count = retrier.call(
            "database", lambda: store_verdicts(factory, part, frames, frame_settings),
            (TransientDatabaseError,))
        if not ok:
            raise DeliveryStoppedError
        new += count or 0

    refused = split_failures(
        records, store, what="database write",
        systemic=lambda e: isinstance(e, DeliveryStoppedError) or is_systemic_db_error(e))
    return new, refused


class KafkaSendError(Exception):
    pass


def send_all(producer: KafkaProducer, messages: Sequence[tuple[str, dict]],
             timeout_s: float = 30.0) -> None:
    """Send (topic, kwargs) messages and wait for every acknowledgement."""
    futures = [producer.send(topic, **kwargs) for topic, kwargs in messages]
    producer.flush(timeout=timeout_s)
    failed = [f.exception for f in futures if not f.is_done or f.failed()]
    if failed:
        raise KafkaSendError(f"{len(failed)} of {len(futures)} sends failed: {failed[0]}")


def verdict_event(record: VerdictRecord, decided_at: datetime) -> dict:
    payload = {
        "frame_id": str(record.frame_id), "camera_id": record.camera_id,
        "line_id": record.line_id, "product": record.product,
        "captured_at": record.captured_at.isoformat(), "decided_at": decided_at.isoformat(),
        "model_version": record.model_version, "score": record.score,
        "threshold": record.threshold, "label": record.label, "regions": len(record.regions),
    }
    # Consumers de-duplicate by this header (pipeline.verdict_events): a batch redone
    # after a crash or a refused commit publishes its events again.
    return {"key": record.camera_id.encode(), "value": json.dumps(payload).encode(),
            "headers": [(H_EVENT_FRAME_ID, str(record.frame_id).encode())]}


def drift_event(product: str, drift: float, model_version: str, at: datetime) -> dict:
    """Verdicts-topic event: a product's line context sees many more high-scoring frames
    than usual (a new defect on every part, a moved camera): an operator should look."""
    payload = {"event": "context_drift", "product": product, "drift": round(drift, 4),
               "model_version": model_version, "decided_at": at.isoformat()}
    return {"key": product.encode(), "value": json.dumps(payload).encode()}


def dlq_message(record: ConsumerRecord, error: FrameRejectedError, *,
                max_value: int = _DLQ_MAX_VALUE) -> dict:
    """The DLQ record for a rejected frame: its key, its bytes when at most `max_value`
    (and 1 MiB), its original headers within 16 KiB, and why it was rejected."""
    value = record.value or b""
    headers, size = [], 0
    for k, v in record.headers or []:
        size += len(k.encode()) + len(v or b"")
        if k in (H_REJECT_REASON, H_REJECT_DETAIL, H_SOURCE) or size > _DLQ_MAX_HEADER_BYTES:
            continue
        headers.append((k, v or b""))
    headers += [
        (H_REJECT_REASON, error.reason.value.encode()),
        (H_REJECT_DETAIL, error.detail[:1000].encode()),
        (H_SOURCE, f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    keep = len(value) <= min(max_value, _DLQ_MAX_VALUE)
    key = record.key if record.key is None or len(record.key) <= 1024 else record.key[:1024]
    return {"key": key, "value": value if keep else b"", "headers": headers}


def dlq_unreadable_message(record: UnreadableRecord) -> dict:
    """The DLQ record for a record the client cannot parse: no bytes (none can be had),
    where it lies in the frames topic and why."""
    return {"key": None, "value": b"", "headers": [
        (H_REJECT_REASON, RejectReason.UNREADABLE.value.encode()),
        (H_REJECT_DETAIL, record.detail.encode()),
        (H_SOURCE, f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]}


def now_utc() -> datetime:
    return datetime.now(UTC)
