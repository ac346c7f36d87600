"""Camera-side SDK: publish frames from a folder, a video file or an OpenCV camera.

    with FramePublisher(settings.kafka) as pub:
        report = publish_images(pub, folder_images(Path("shots")), camera_id="cam-1",
                                line_id="line-3", product="bottle", fps=10)

Every frame gets its id once, before the first send: the producer's own retries
resend the same record, and the worker's store is idempotent on that id, so a
frame delivered twice still yields one verdict.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer
from tqdm import tqdm

from pipeline.frames import FrameEnvelope, make_envelope, to_kafka_headers
from pipeline.kafka_io import build_producer
from pipeline.settings import KafkaSettings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FramePublisher:
    """Sends envelopes to the frames topic (key = camera id) and tracks failures."""

    def __init__(self, settings: KafkaSettings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer or build_producer(settings)
        self.sent = 0
        self.failed = 0

    def publish(self, envelope: FrameEnvelope) -> None:
        if len(envelope.image) > self.settings.max_frame_bytes:
            raise ValueError(f"frame of {len(envelope.image)} bytes exceeds max_frame_bytes "
                             f"{self.settings.max_frame_bytes}")
        self.send_raw(envelope.key, envelope.image, to_kafka_headers(envelope.header))

    def send_raw(self, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]]) -> None:
        """Send a record as given (also how tests inject malformed frames)."""
        future = self._producer.send(self.settings.topic_frames, key=key, value=value,
                                     headers=headers)
        future.add_callback(self._ok).add_errback(self._failed)

    def _ok(self, _metadata: object) -> None:
        self.sent += 1

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        log.error("frame not delivered: %s", exc)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def folder_images(folder: Path, exclude: set[Path] | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every PNG/JPEG under `folder`, sorted by path."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        if exclude and path.resolve() in exclude:
            continue
        yield str(path.relative_to(folder)), path.read_bytes()


def capture_images(source: str | int, *, encoding: str = ".jpg") -> Iterator[tuple[str, bytes]]:
    """Frames of a video file (path) or a camera (OpenCV index), encoded as JPEG or PNG."""
    import cv2

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise FileNotFoundError(f"OpenCV cannot open {source!r}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            encoded_ok, buf = cv2.imencode(encoding, frame)
            if encoded_ok:
                yield f"{source}#{index}", buf.tobytes()
            index += 1
    finally:
        capture.release()


@dataclass
class PublishReport:
    published: int = 0
    failed: int = 0
    skipped: int = 0  # not a PNG/JPEG the contract accepts
    frame_ids: dict[str, uuid.UUID] = field(default_factory=dict)


def publish_images(publisher: FramePublisher, images: Iterable[tuple[str, bytes]], *,
                   camera_id: str, line_id: str, product: str, fps: float | None = None,
                   max_frames: int | None = None, progress: bool = False) -> PublishReport:
    """Publish at `fps` (None = as fast as possible), waiting for every acknowledgement."""
    report = PublishReport()
    interval = 1.0 / fps if fps else 0.0
    next_at = time.monotonic()
    bar = tqdm(total=max_frames, unit="frame", disable=not progress, desc="publishing")
    sent_before, failed_before = publisher.sent, publisher.failed
    for name, data in images:
        if max_frames is not None and len(report.frame_ids) >= max_frames:
            break
        try:
            envelope = make_envelope(data, camera_id=camera_id, line_id=line_id, product=product)
        except ValueError as exc:
            log.warning("skipping %s: %s", name, exc)
            report.skipped += 1
            continue
        if interval:
            # Pace against a schedule, not a sleep per frame, so send time doesn't drift it.
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        publisher.publish(envelope)
        report.frame_ids[name] = envelope.header.frame_id
        bar.update(1)
    publisher.flush()
    bar.close()
    report.published = publisher.sent - sent_before
    report.failed = publisher.failed - failed_before
    return report
