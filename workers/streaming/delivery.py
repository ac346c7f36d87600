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
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.frames import H_REJECT_DETAIL, H_REJECT_REASON, H_SOURCE, FrameRejectedError
from pipeline.settings import ApiSettings
from pipeline.storage.database import transaction
from pipeline.storage.frame_store import store_frames
from pipeline.storage.records import VerdictRecord
from pipeline.storage.repository import write_verdicts
from pipeline.verdict_events import H_EVENT_FRAME_ID

log = logging.getLogger(__name__)
T = TypeVar("T")

# A record in the DLQ keeps the frame's bytes unless they are what got it rejected.
_DLQ_MAX_VALUE = 1024 * 1024


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


def dlq_message(record: ConsumerRecord, error: FrameRejectedError) -> dict:
    value = record.value or b""
    headers = [(k, v or b"") for k, v in (record.headers or [])
               if k not in (H_REJECT_REASON, H_REJECT_DETAIL, H_SOURCE)]
    headers += [
        (H_REJECT_REASON, error.reason.value.encode()),
        (H_REJECT_DETAIL, error.detail[:1000].encode()),
        (H_SOURCE, f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    return {"key": record.key, "value": value if len(value) <= _DLQ_MAX_VALUE else b"",
            "headers": headers}


def now_utc() -> datetime:
    return datetime.now(UTC)
