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
from tests.frame_bombs import lying_jpeg

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


@pytest.mark.parametrize("captured_at", [b"9999-12-31T23:59:59-14:00",
                                         b"0001-01-01T00:00:00+14:00"])
def test_a_time_past_the_calendar_in_utc_is_an_invalid_header(captured_at: bytes) -> None:
    """Valid ISO 8601 with an offset, but out of range once converted to UTC: a
    validation error naming the header, not an OverflowError out of parse_frame."""
    headers, value = _headers()
    with pytest.raises(FrameRejectedError) as info:
        parse_frame(_replace(headers, H_CAPTURED_AT, captured_at), value,
                    max_frame_bytes=5_000)
    assert info.value.reason is RejectReason.INVALID_HEADERS
    assert "captured_at" in info.value.detail and "UTC" in info.value.detail


def test_the_lying_jpeg_is_refused_by_the_size_libjpeg_reads() -> None:
    """658 bytes whose FF 00 L L after SOI hid a 30000x30000 SOF0 behind a 64x64 one."""
    image = lying_jpeg()
    assert len(image) < 1000
    assert sniff_image(image) == ("image/jpeg", 30000, 30000)
    with pytest.raises(FrameRejectedError) as info:
        parse_frame(_frame_headers(64, 64), image, max_frame_bytes=10_000,
                    max_frame_pixels=50_000_000)
    assert info.value.reason is RejectReason.PIXEL_BUDGET
    assert "30000x30000" in info.value.detail


def test_the_lying_jpeg_pattern_at_a_small_size_decodes_as_sniffed() -> None:
    """The same construction at 96x80: OpenCV (libjpeg) decodes the size the sniff reads,
    not the 64x64 hidden in the comment."""
    image = lying_jpeg(real=(96, 80), shown=(64, 64))
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (80, 96)
    assert sniff_image(image)[1:] == (96, 80)


def _jpeg(*segments: bytes, sof: int = 0xC0, size: tuple[int, int] = (40, 30)) -> bytes:
    """SOI, the given bytes, an SOFn of `size` (width, height), then SOS and EOI."""
    body = struct.pack(">BHHB", 8, size[1], size[0], 1) + b"\x01\x11\x00"
    return (b"\xff\xd8" + b"".join(segments) + bytes((0xFF, sof))
            + struct.pack(">H", 2 + len(body)) + body + b"\xff\xda\x00\x02\xff\xd9")


def _seg(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", 2 + len(payload)) + payload


@pytest.mark.parametrize("before", [
    b"",
    b"\xff\xff\xff",  # fill bytes before a marker
    b"\xff\x00\x01\x02",  # FF 00 is no marker; the bytes after it are skipped as junk
    b"junk",  # bytes outside any segment: libjpeg skips to the next FF
    b"\xff\xd0\xff\xd7\xff\x01",  # RST0, RST7, TEM: no length field
    _seg(0xC4, b"\x00" * 20),  # DHT, not a frame
    _seg(0xC8, b"\x00" * 9),  # JPG, not a frame
    _seg(0xCC, b"\x00" * 2),  # DAC, not a frame
    _seg(0xFE, b"\xff\xc0\x00\x11\x08\x75\x30\x75\x30"),  # a SOF0 inside a comment
    _seg(0xE1, b"Exif\x00\x00" + b"\xff" * 30),  # APP1 full of FF
    b"\xff\xfe\x00\x00",  # a comment of length 0: libjpeg skips the two length bytes only
])
def test_jpeg_size_is_read_from_the_sof_libjpeg_uses(before: bytes) -> None:
    assert sniff_image(_jpeg(before)) == ("image/jpeg", 40, 30)


@pytest.mark.parametrize("sof", [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                                 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
def test_every_start_of_frame_kind_carries_the_size(sof: int) -> None:
    assert sniff_image(_jpeg(sof=sof, size=(1234, 567)))[1:] == (1234, 567)


def test_the_first_sof_counts_libjpeg_refuses_a_second() -> None:
    first = _jpeg(sof=0xC2, size=(30000, 30000))
    second = first[:2] + first[2:].replace(b"\xff\xda", _jpeg(size=(8, 8))[2:-6] + b"\xff\xda")
    assert sniff_image(second)[1:] == (30000, 30000)


@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff\xda\x00\x02\xff\xd9",  # a scan before any frame header
    b"\xff\xd8\xff\xd9",  # the end before any frame header
    b"\xff\xd8\xff\xd8" + _jpeg()[2:],  # a second SOI: libjpeg refuses it
    b"\xff\xd8" + _seg(0xE0, b"JFIF"),  # cut off before any frame header
    b"\xff\xd8\xff\xc0\x00\x11\x08\x00",  # SOF cut short
    b"\xff\xd8\xff\xff\xff",  # only fill bytes
])
def test_jpeg_without_a_usable_frame_header_is_undecodable(data: bytes) -> None:
    with pytest.raises(ValueError, match="JPEG"):
        sniff_image(data)


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
                                    [cv2.IMWRITE_JPEG_RST_INTERVAL, 1],
                                    [cv2.IMWRITE_JPEG_OPTIMIZE, 1]])
def test_jpeg_size_matches_what_opencv_decodes(params: list[int]) -> None:
    rng = np.random.default_rng(3)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (37, 53, 3), dtype=np.uint8), params)
    assert ok
    data = buf.tobytes()
    # With fill bytes and junk put between the markers, libjpeg still reads the same frame.
    padded = data[:2] + b"\xff\xff\xff\x00\x07junk" + data[2:]
    for image in (data, padded):
        decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        assert sniff_image(image)[1:] == (decoded.shape[1], decoded.shape[0]) == (53, 37)
