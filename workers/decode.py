"""Frame bytes -> RGB arrays, in a small thread pool (OpenCV releases the GIL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.frames import FrameEnvelope, FrameRejectedError, RejectReason


@dataclass(frozen=True)
class DecodedFrame:
    envelope: FrameEnvelope
    rgb: np.ndarray  # original size, uint8 [H, W, 3]
    model_input: np.ndarray  # resized to the engine's input size, uint8 [s, s, 3]


def decode_frame(envelope: FrameEnvelope, input_size: int) -> DecodedFrame:
    """Decode, check against the header's width/height, resize for the model."""
    bgr = cv2.imdecode(np.frombuffer(envelope.image, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameRejectedError(RejectReason.UNDECODABLE,
                            f"OpenCV cannot decode {len(envelope.image)} bytes as "
                            f"{envelope.header.content_type}")
    h, w = bgr.shape[:2]
    header = envelope.header
    if (w, h) != (header.width, header.height):
        raise FrameRejectedError(RejectReason.SIZE_MISMATCH,
                            f"decoded {w}x{h}, headers say {header.width}x{header.height}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # INTER_AREA when shrinking keeps fine textures from aliasing at the model's size.
    interp = cv2.INTER_AREA if max(h, w) > input_size else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (input_size, input_size), interpolation=interp)
    return DecodedFrame(envelope=envelope, rgb=rgb, model_input=resized)


def _decode_one(item: tuple[FrameEnvelope, int]) -> DecodedFrame | FrameRejectedError:
    try:
        return decode_frame(*item)
    except FrameRejectedError as exc:
        return exc
    except cv2.error as exc:
        return FrameRejectedError(RejectReason.UNDECODABLE, f"OpenCV error: {exc}")


def start_decode(pool: ThreadPoolExecutor, items: Sequence[tuple[FrameEnvelope, int]]
                 ) -> Callable[[], list[DecodedFrame | FrameRejectedError]]:
    """Queue the decodes now; the returned call waits for them (in order). The worker
    starts the next batch's decode before inferring the current one."""
    futures = [pool.submit(_decode_one, item) for item in items]
    return lambda: [f.result() for f in futures]


def decode_all(pool: ThreadPoolExecutor, items: Sequence[tuple[FrameEnvelope, int]]
               ) -> list[DecodedFrame | FrameRejectedError]:
    """Decode (envelope, input_size) pairs in order; a failure is returned, not raised."""
    return start_decode(pool, items)()
