from __future__ import annotations

import struct
import uuid
import zlib
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from pipeline.frames import (
    H_CAPTURED_AT,
    H_SCHEMA,
    H_WIDTH,
    FrameHeader,
    FrameRejectedError,
    RejectReason,
    make_envelope,
    parse_frame,
    sniff_image,
    to_kafka_headers,
)

pytestmark = pytest.mark.unit


def _image(ext: str, w: int = 48, h: int = 32) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("ext", "ctype"), [(".png", "image/png"), (".jpg", "image/jpeg")])
def test_sniff_reads_type_and_size_without_decoding(ext: str, ctype: str) -> None:
    assert sniff_image(_image(ext, 48, 32)) == (ctype, 48, 32)


def test_sniff_rejects_other_bytes() -> None:
    with pytest.raises(ValueError):
        sniff_image(b"GIF89a....")


def test_envelope_round_trips_through_kafka_headers() -> None:
    captured = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    fid = uuid.uuid4()
    env = make_envelope(_image(".png"), camera_id="cam-1", line_id="line-3", product="bottle",
                        captured_at=captured, frame_id=fid)
    back = parse_frame(to_kafka_headers(env.header), env.image, max_frame_bytes=10_000)
    assert back == env
    assert back.key == b"cam-1"
    assert back.header.frame_id == fid and back.header.captured_at == captured


def _headers() -> tuple[list[tuple[str, bytes]], bytes]:
    env = make_envelope(_image(".png"), camera_id="cam-1", line_id="l1", product="bottle")
    return to_kafka_headers(env.header), env.image


def _replace(headers: list, name: str, value: bytes | None) -> list:
    return [(k, value if k == name else v) for k, v in headers if value is not None or k != name]


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda h, v: (_replace(h, H_SCHEMA, b"2"), v), RejectReason.UNSUPPORTED_SCHEMA),
    (lambda h, v: (_replace(h, H_SCHEMA, None), v), RejectReason.UNSUPPORTED_SCHEMA),
    (lambda h, v: (h, b""), RejectReason.EMPTY),
    (lambda h, v: (h, v + b"\0" * 10_000), RejectReason.OVERSIZE),
    (lambda h, v: (_replace(h, H_WIDTH, b"-3"), v), RejectReason.INVALID_HEADERS),
    (lambda h, v: (_replace(h, H_CAPTURED_AT, b"2026-11-23T08:00:00"), v),
     RejectReason.INVALID_HEADERS),  # no time zone
    (lambda h, v: (_replace(h, "clad-frame-id", None), v), RejectReason.INVALID_HEADERS),
])
def test_every_rejection_names_its_reason(mutate, reason: RejectReason) -> None:  # noqa: ANN001
    headers, value = mutate(*_headers())
    with pytest.raises(FrameRejectedError) as info:
        parse_frame(headers, value, max_frame_bytes=5_000)
    assert info.value.reason is reason
    assert info.value.detail


def test_bad_identifiers_are_rejected_at_the_producer() -> None:
    with pytest.raises(ValueError):
        make_envelope(_image(".png"), camera_id="cam 1; drop", line_id="l", product="p")


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring a size, then no pixel data (nothing to decode)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def _frame_headers(width: int, height: int) -> list[tuple[str, bytes]]:
    header = FrameHeader(camera_id="c", line_id="l", product="p", content_type="image/png",
                         width=width, height=height)
    return to_kafka_headers(header)


@pytest.mark.parametrize(("declared", "headers", "reason"), [
    ((30000, 30000), (30000, 30000), RejectReason.PIXEL_BUDGET),  # honest bomb
    ((30000, 30000), (64, 64), RejectReason.PIXEL_BUDGET),  # lying headers
    ((8000, 8000), (8000, 8000), RejectReason.PIXEL_BUDGET),  # 64 Mpx > 50 Mpx
    ((640, 480), (480, 640), RejectReason.SIZE_MISMATCH),  # file and headers disagree
])
def test_declared_sizes_are_checked_before_any_decode(declared: tuple[int, int],
                                                      headers: tuple[int, int],
                                                      reason: RejectReason) -> None:
    image = _png_declaring(*declared)
    with pytest.raises(FrameRejectedError) as info:
        parse_frame(_frame_headers(*headers), image, max_frame_bytes=10_000,
                    max_frame_pixels=50_000_000)
    assert info.value.reason is reason
    assert f"{declared[0]}x{declared[1]}" in info.value.detail


def test_a_frame_within_the_budget_and_consistent_passes() -> None:
    image = _png_declaring(640, 480)
    env = parse_frame(_frame_headers(640, 480), image, max_frame_bytes=10_000,
                      max_frame_pixels=50_000_000)
    assert (env.header.width, env.header.height) == (640, 480)
    with pytest.raises(FrameRejectedError) as info:  # a PNG signature and garbage after it
        parse_frame(_frame_headers(640, 480), image[:8] + b"garbage" * 4,
                    max_frame_bytes=10_000, max_frame_pixels=50_000_000)
    assert info.value.reason is RejectReason.UNDECODABLE
