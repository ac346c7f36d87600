"""Image files that lie about their size, built in code for the frame-contract tests.

Nothing here is ever decoded at its real size by a test: the point of each file is
that the contract refuses it before OpenCV allocates anything."""

from __future__ import annotations

import struct

import cv2
import numpy as np


def _segment(data: bytes, marker: int) -> tuple[int, bytes]:
    at = data.index(bytes((0xFF, marker)))
    return at, data[at:at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]]


def _sof_with_size(sof: bytes, width: int, height: int) -> bytes:
    return sof[:5] + struct.pack(">HH", height, width) + sof[9:]


def lying_jpeg(real: tuple[int, int] = (30000, 30000), shown: tuple[int, int] = (64, 64)
               ) -> bytes:
    """A JPEG libjpeg reads as `real` (width, height) that a reader taking FF 00 for a
    segment reads as `shown`.

    After SOI come the bytes FF 00 L L: libjpeg discards FF 00 (not a marker) and the
    two bytes after it (not an FF), then reads the real tables and the real SOF0. A
    reader that takes FF 00 for a segment of length L jumps to a second SOF0 declaring
    `shown`, hidden in a comment that libjpeg skips whole. The scan holds a few blocks
    of mid-grey: libjpeg fills the rest of a larger frame with grey (a warning), so
    the real frame is decoded, allocated in full, from some 600 bytes."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = buf.tobytes()
    at, sof = _segment(data, 0xC0)
    body = data[2:at] + _sof_with_size(sof, *real) + data[at + len(sof):]
    scan = body.index(b"\xff\xda")
    hidden = _sof_with_size(sof, *shown)
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 2 + len(hidden)) + b"ab" + hidden
    tables = body[:scan]
    # From the FF of FF 00: 2 + 2 + length bytes lead to the hidden SOF0's FF.
    length = 2 + len(tables) + 6 - 2
    jump = struct.pack(">H", length)
    assert 0xFF not in jump, "libjpeg would read an FF in the jump as a marker"
    return b"\xff\xd8\xff\x00" + jump + tables + comment + body[scan:]
