"""One frame's failure stays that frame's: validation, decode, heatmap and the database
write each turn an exception on one frame into a DLQ reason; the others go on."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from pipeline.frames import (
    H_CAPTURED_AT,
    H_REJECT_REASON,
    FrameRejectedError,
    RejectReason,
    make_envelope,
    to_kafka_headers,
)
from pipeline.settings import load_settings
from workers.streaming import decode as decode_module
from workers.streaming import verdicts as verdicts_module
from workers.streaming.decode import DecodedFrame, decode_all
from workers.streaming.delivery import (
    DeliveryStoppedError,
    Retrier,
    dlq_message,
    store_isolated,
)
from workers.streaming.isolation import guarded, split_failures
from workers.streaming.verdicts import infer_product, to_verdicts_isolated
from workers.streaming.worker import InferenceWorker

pytestmark = pytest.mark.unit


def _png(value: int = 90, w: int = 10, h: int = 12) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def _record(offset: int, headers: list | None = None, value: bytes = b"v") -> ConsumerRecord:
    return ConsumerRecord("frames", 0, -1, offset, 0, 0, b"cam", value, headers or [], None,
                          3, len(value), 5)


def test_guarded_retries_once_then_names_the_exception() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError
        return "ok"
    assert guarded(flaky, what="decode") == "ok" and len(calls) == 2

    def broken() -> None:
        raise OverflowError("date value out of range")
    error = guarded(broken, what="validation")
    assert isinstance(error, FrameRejectedError)
    assert error.reason is RejectReason.INTERNAL_ERROR
    assert error.detail == "validation raised OverflowError: date value out of range"
    rejected = FrameRejectedError(RejectReason.EMPTY, "no bytes")

    def rejects() -> None:
        raise rejected
    assert guarded(rejects, what="validation") is rejected  # a rejection is not retried


def test_split_failures_finds_the_frames_that_fail_alone() -> None:
    stored: list[list[int]] = []

    def store(part: list[int]) -> None:  # all or nothing, as one transaction
        if 3 in part or 6 in part:
            raise DataError("INSERT", {}, ValueError("value out of range"))
        stored.append(list(part))
    failed = split_failures(list(range(8)), store, what="database write")
    assert sorted(i for part in stored for i in part) == [0, 1, 2, 4, 5, 7]
    assert [(i, e.reason) for i, e in failed] == [(3, RejectReason.INTERNAL_ERROR),
                                                  (6, RejectReason.INTERNAL_ERROR)]
    assert "DataError" in failed[0][1].detail


def test_split_failures_raises_what_is_no_frames_fault() -> None:
    calls = []

    def store(part: list[int]) -> None:
        calls.append(part)
        raise ProgrammingError("INSERT", {}, ValueError('relation "verdicts" does not exist'))
    with pytest.raises(ProgrammingError):
        split_failures([1, 2, 3, 4], store, what="database write",
                       systemic=lambda e: isinstance(e, ProgrammingError))
    assert calls == [[1, 2, 3, 4]]  # not split: every frame would have gone to the DLQ


def _frame_headers(**override: bytes) -> list[tuple[str, bytes]]:
    env = make_envelope(_png(), camera_id="cam", line_id="line", product="widget")
    return [(k, override.get(k, v)) for k, v in to_kafka_headers(env.header)]


@pytest.fixture
def worker() -> InferenceWorker:
    engine = SimpleNamespace(input_size=8)
    w = InferenceWorker(load_settings(), {"widget": engine},  # type: ignore[dict-item]
                        consumer=SimpleNamespace(), producer=SimpleNamespace(),  # type: ignore[arg-type]
                        session_factory=None, cache=None)  # type: ignore[arg-type]
    yield w
    w.delivery.shutdown(wait=True)
    w.pool.shutdown(wait=True)


def test_validation_sends_a_frame_that_raises_to_the_dlq_and_keeps_the_rest(
        worker: InferenceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    far = _record(1, _frame_headers(**{H_CAPTURED_AT: b"9999-12-31T23:59:59-14:00"}), _png())
    good = _record(2, _frame_headers(), _png())
    accepted, rejected = worker._validate([far, good], worker.engines)
    assert [r.offset for r, _e in accepted] == [2]
    assert [(r.offset, e.reason) for r, e in rejected] == [(1, RejectReason.INVALID_HEADERS)]

    import workers.streaming.worker as worker_module

    def explode(*_a: object, **_k: object) -> None:
        raise RecursionError("a bug in the contract")
    monkeypatch.setattr(worker_module, "parse_frame", explode)
    accepted, rejected = worker._validate([good], worker.engines)
    assert accepted == []
    assert rejected[0][1].reason is RejectReason.INTERNAL_ERROR
    assert "RecursionError" in rejected[0][1].detail


def test_decode_turns_any_exception_into_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_envelope(_png(), camera_id="c", line_id="l", product="p")
    poison = make_envelope(_png(91), camera_id="c", line_id="l", product="p")
    real = decode_module.decode_frame

    def decode(envelope, size):  # noqa: ANN001, ANN202
        if envelope is poison:
            raise IndexError("bad table")
        return real(envelope, size)
    monkeypatch.setattr(decode_module, "decode_frame", decode)
    with ThreadPoolExecutor(2) as pool:
        out = decode_all(pool, [(good, 8), (poison, 8)])
    assert isinstance(out[0], DecodedFrame)
    assert isinstance(out[1], FrameRejectedError)
    assert out[1].reason is RejectReason.INTERNAL_ERROR and "IndexError" in out[1].detail


def test_opencvs_own_pixel_limit_reads_as_the_pixel_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_envelope(_png(), camera_id="c", line_id="l", product="p")

    def refuse(*_a: object) -> None:
        raise cv2.error("loadsave.cpp:80: error: (-215:Assertion failed) pixels <= "
                        "CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'")
    monkeypatch.setattr(decode_module.cv2, "imdecode", refuse)
    with ThreadPoolExecutor(1) as pool:
        (out,) = decode_all(pool, [(env, 8)])
    assert isinstance(out, FrameRejectedError) and out.reason is RejectReason.PIXEL_BUDGET


class Flat:
    input_size, threshold, version = 8, 0.5, "t-1"

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = frames.mean(axis=-1).astype(np.float32) / 255.0
        return maps.reshape(len(frames), -1).max(axis=1), maps


def _decoded(value: int) -> tuple[ConsumerRecord, DecodedFrame]:
    env = make_envelope(_png(value), camera_id="c", line_id="l", product="p")
    return _record(value), DecodedFrame(env, np.full((8, 8, 3), value, np.uint8))


def test_a_heatmap_that_raises_sends_only_its_frame_to_the_dlq(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, _ = infer_product(Flat(), [_decoded(10), _decoded(20), _decoded(30)], chunk=8)
    real = verdicts_module.find_regions

    def regions(amap, **kw):  # noqa: ANN001, ANN003, ANN202
        if amap.max() > 0.1:  # the frame of value 30
            raise ValueError("a map the region finder cannot take")
        return real(amap, **kw)
    monkeypatch.setattr(verdicts_module, "find_regions", regions)
    with ThreadPoolExecutor(2) as pool:
        verdicts, failed = to_verdicts_isolated(Flat(), outputs, min_area=1, pool=pool)
    assert [v.kafka_offset for v in verdicts] == [10, 20]
    assert [(r.offset, e.reason) for r, e in failed] == [(30, RejectReason.INTERNAL_ERROR)]


def test_the_database_write_is_split_and_only_the_refused_verdict_is_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.streaming.delivery as delivery_module

    ids = [uuid.uuid4() for _ in range(5)]
    records = [SimpleNamespace(frame_id=i) for i in ids]
    written: list[uuid.UUID] = []

    def store(_factory, part, _frames, _settings):  # noqa: ANN001, ANN202
        if ids[2] in {r.frame_id for r in part}:
            raise IntegrityError("INSERT", {}, ValueError("violates check constraint"))
        written.extend(r.frame_id for r in part)
        return len(part)
    monkeypatch.setattr(delivery_module, "store_verdicts", store)
    retrier = Retrier(threading.Event(), max_backoff_s=0.01)
    new, refused = store_isolated(retrier, None, records, {}, None)  # type: ignore[arg-type]
    assert new == 4 and sorted(written) == sorted(ids[:2] + ids[3:])
    assert [r.frame_id for r, _e in refused] == [ids[2]]
    stop = threading.Event()
    stop.set()

    def down(*_a: object) -> int:
        raise delivery_module.TransientDatabaseError("connection refused")
    monkeypatch.setattr(delivery_module, "store_verdicts", down)
    with pytest.raises(DeliveryStoppedError):  # stopping during an outage: no DLQ, no split
        store_isolated(Retrier(stop, max_backoff_s=0.01), None, records, {}, None)  # type: ignore[arg-type]


def test_a_dlq_record_always_fits_the_producers_request_limit() -> None:
    """An oversize frame below 1 MiB and a record with 1 MB of headers: the DLQ record
    drops the bytes above max_frame_bytes and the headers past 16 KiB, keeps the reason."""
    headers = [(f"h{i}", b"x" * 5_000) for i in range(200)]
    record = _record(7, headers, b"\0" * 900_000)
    message = dlq_message(record, FrameRejectedError(RejectReason.OVERSIZE, "too big"),
                          max_value=50_000)
    size = len(message["value"]) + sum(len(k) + len(v) for k, v in message["headers"])
    assert message["value"] == b"" and size < 20 * 1024
    assert dict(message["headers"])[H_REJECT_REASON] == b"oversize"
    assert [k for k, _v in message["headers"]][:4] == ["h0", "h1", "h2", H_REJECT_REASON]
    small = dlq_message(_record(8, [], b"png"), FrameRejectedError(RejectReason.EMPTY, "x"),
                        max_value=50_000)
    assert small["value"] == b"png"
