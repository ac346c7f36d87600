"""The frame contract on Kafka: a versioned envelope of headers + image bytes.

Metadata travels in Kafka headers (schema version first) and the value is the
encoded image untouched, so a consumer can reject a frame by its headers without
reading the image and the DLQ can carry the original headers as they came.
The key is the camera id: one camera's frames stay ordered in one partition.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = "1"
CONTENT_TYPES = ("image/jpeg", "image/png")
ContentType = Literal["image/jpeg", "image/png"]

H_SCHEMA = "clad-schema"
H_FRAME_ID = "clad-frame-id"
H_CAMERA = "clad-camera-id"
H_LINE = "clad-line-id"
H_PRODUCT = "clad-product"
H_CAPTURED_AT = "clad-captured-at"
H_CONTENT_TYPE = "clad-content-type"
H_WIDTH = "clad-width"
H_HEIGHT = "clad-height"
_FIELD_BY_HEADER = {
    H_SCHEMA: "schema_version", H_FRAME_ID: "frame_id", H_CAMERA: "camera_id",
    H_LINE: "line_id", H_PRODUCT: "product", H_CAPTURED_AT: "captured_at",
    H_CONTENT_TYPE: "content_type", H_WIDTH: "width", H_HEIGHT: "height",
}
# Added by the worker when a frame goes to the DLQ.
H_REJECT_REASON = "clad-reject-reason"
H_REJECT_DETAIL = "clad-reject-detail"
H_SOURCE = "clad-source"  # topic/partition/offset of the rejected record

_IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"


class RejectReason(StrEnum):
    """Why a frame was not scored; the DLQ record carries one of these."""

    UNSUPPORTED_SCHEMA = "unsupported_schema"  # unknown or missing schema version
    INVALID_HEADERS = "invalid_headers"  # a header missing or not of its type
    OVERSIZE = "oversize"  # image bytes above the contract's max_frame_bytes
    EMPTY = "empty"  # no image bytes
    UNDECODABLE = "undecodable"  # bytes that OpenCV cannot decode
    SIZE_MISMATCH = "size_mismatch"  # decoded size differs from width/height headers
    UNKNOWN_PRODUCT = "unknown_product"  # no model serves this product
    INFERENCE_FAILED = "inference_failed"  # the engine raised on this frame alone
    PIXEL_BUDGET = "pixel_budget"  # declared width x height above max_frame_pixels
    INTERNAL_ERROR = "internal_error"  # the worker raised on this frame alone (a bug)
    UNREADABLE = "unreadable_record"  # the Kafka client cannot parse the record at all


class FrameRejectedError(ValueError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class FrameHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = SCHEMA_VERSION
    frame_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    camera_id: str = Field(min_length=1, max_length=64, pattern=_IDENT)
    line_id: str = Field(min_length=1, max_length=64, pattern=_IDENT)
    product: str = Field(min_length=1, max_length=100, pattern=_IDENT)
    captured_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    content_type: ContentType
    width: int = Field(gt=0, le=32768)
    height: int = Field(gt=0, le=32768)

    @field_validator("captured_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Latency is computed across machines: a naive timestamp would be ambiguous.
        if value.tzinfo is None:
            raise ValueError("must carry a time zone")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59:59-14:00 is past datetime.max in UTC
            raise ValueError("out of range once converted to UTC") from None


class FrameEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    header: FrameHeader
    image: bytes

    @property
    def key(self) -> bytes:
        return self.header.camera_id.encode()


def to_kafka_headers(header: FrameHeader) -> list[tuple[str, bytes]]:
    values = header.model_dump(mode="json")
    return [(name, str(values[field]).encode()) for name, field in _FIELD_BY_HEADER.items()]


def headers_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as text; undecodable values become replacement characters."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or [])}


def parse_frame(headers: Sequence[tuple[str, bytes | None]] | None, value: bytes | None,
                *, max_frame_bytes: int, max_frame_pixels: int | None = None) -> FrameEnvelope:
    """Validate one Kafka record against the contract; raise FrameRejectedError with a reason.

    With max_frame_pixels, the image's own header is read too (no decode): a frame whose
    file declares another size than its Kafka headers, or more pixels than the budget, is
    rejected before OpenCV allocates anything for it (a 100 KB PNG can declare 1 Gpx)."""
    text = headers_dict(headers)
    version = text.get(H_SCHEMA)
    if version != SCHEMA_VERSION:
        raise FrameRejectedError(RejectReason.UNSUPPORTED_SCHEMA,
                            f"schema version {version!r}, this worker reads {SCHEMA_VERSION!r}")
    if not value:
        raise FrameRejectedError(RejectReason.EMPTY, "record has no image bytes")
    if len(value) > max_frame_bytes:
        raise FrameRejectedError(RejectReason.OVERSIZE,
                            f"{len(value)} bytes > limit {max_frame_bytes}")
    # Every header is required on the wire: a defaulted frame id would give each
    # redelivery a new id and break the one-verdict-per-frame guarantee.
    missing = [name for name in _FIELD_BY_HEADER if name not in text]
    if missing:
        raise FrameRejectedError(RejectReason.INVALID_HEADERS, f"missing headers {missing}")
    fields = {field: text[name] for name, field in _FIELD_BY_HEADER.items()}
    try:
        header = FrameHeader.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise FrameRejectedError(RejectReason.INVALID_HEADERS, problems) from None
    if max_frame_pixels is not None:
        check_declared_size(header, value, max_frame_pixels)
    return FrameEnvelope(header=header, image=value)


def check_declared_size(header: FrameHeader, image: bytes, max_pixels: int) -> None:
    """Reject by the sizes the headers and the file itself declare, before any decode."""
    if header.width * header.height > max_pixels:
        raise FrameRejectedError(RejectReason.PIXEL_BUDGET,
                                 f"headers declare {header.width}x{header.height} = "
                                 f"{header.width * header.height} px > budget {max_pixels}")
    try:
        _type, width, height = sniff_image(image)
    except (ValueError, struct.error) as exc:
        raise FrameRejectedError(RejectReason.UNDECODABLE,
                                 f"no PNG/JPEG size in the image header: {exc}") from None
    if width * height > max_pixels:
        raise FrameRejectedError(RejectReason.PIXEL_BUDGET,
                                 f"image file declares {width}x{height} = {width * height} px "
                                 f"> budget {max_pixels}")
    if (width, height) != (header.width, header.height):
        raise FrameRejectedError(RejectReason.SIZE_MISMATCH,
                                 f"image file declares {width}x{height}, headers say "
                                 f"{header.width}x{header.height}")


def sniff_image(data: bytes) -> tuple[ContentType, int, int]:
    """Content type and (width, height) from a PNG or JPEG header, without decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise ValueError("PNG without an IHDR chunk first")
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data[:2] == b"\xff\xd8":
        return "image/jpeg", *_jpeg_size(data)
    raise ValueError("not a PNG or JPEG image")


# Start-of-frame markers, each of which carries the frame's height and width: baseline,
# extended, progressive and lossless, Huffman or arithmetic (C4 DHT, C8 JPG, CC DAC are not).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                       0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the start-of-frame marker libjpeg would use.

    Walks the markers after SOI the way libjpeg's read_markers does (jdmarker.c), so
    the size checked against the pixel budget is the size OpenCV would allocate:
    bytes up to an 0xFF are skipped, repeated 0xFF are fill, FF 00 is not a marker
    (libjpeg discards it and scans on: read as a segment it hid a 30000x30000 frame
    behind a 64x64 one), TEM and RSTn have no length, and the first SOFn wins (libjpeg
    refuses a second one). A scan, an end or a second SOI before any SOFn: undecodable."""
    i, end = 2, len(data)
    while True:
        while i < end and data[i] != 0xFF:
            i += 1
        while i < end and data[i] == 0xFF:
            i += 1
        if i >= end:
            raise ValueError("JPEG ends before a start-of-frame marker")
        marker = data[i]
        i += 1
        if marker == 0x00 or marker in _JPEG_NO_LENGTH:
            continue
        if marker in _JPEG_SOF:
            if i + 7 > end:
                raise ValueError("JPEG start-of-frame segment cut short")
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            return width, height
        if marker in (0xD8, 0xD9, 0xDA):
            raise ValueError(f"JPEG marker {marker:#04x} before any start-of-frame marker")
        if i + 2 > end:
            raise ValueError("JPEG segment length cut short")
        # libjpeg skips length - 2 bytes after the length; a length below 2 skips none.
        i += max(2, struct.unpack(">H", data[i:i + 2])[0])


def make_envelope(image: bytes, *, camera_id: str, line_id: str, product: str,
                  captured_at: datetime | None = None,
                  frame_id: uuid.UUID | None = None) -> FrameEnvelope:
    """An envelope for encoded PNG/JPEG bytes; type and size are read from the image."""
    content_type, width, height = sniff_image(image)
    header = FrameHeader(
        frame_id=frame_id or uuid.uuid4(), camera_id=camera_id, line_id=line_id,
        product=product, captured_at=captured_at or datetime.now(UTC),
        content_type=content_type, width=width, height=height)
    return FrameEnvelope(header=header, image=image)
