"""OpenCV's own pixel limit: the backstop behind the frame contract's size checks.

pipeline.frames refuses a frame whose headers or image file declare more pixels than
CLAD_MAX_FRAME_PIXELS before anything is decoded. Should a file ever hide its size
from that reading, OpenCV still refuses to decode more than the same budget: it reads
OPENCV_IO_MAX_IMAGE_PIXELS once, when the library loads, so it is set before the
worker process first imports cv2 (a later change is ignored: checked in
tests/unit/workers/streaming/test_opencv_limit.py).
"""

from __future__ import annotations

import os
import sys

OPENCV_MAX_PIXELS = "OPENCV_IO_MAX_IMAGE_PIXELS"


class OpenCvLoadedError(RuntimeError):
    """cv2 was imported before its limit was set: the limit would be silently ignored."""


def limit_opencv_pixels(max_pixels: int) -> None:
    """Make OpenCV refuse (cv2.error) any image of more than `max_pixels` pixels."""
    if "cv2" in sys.modules:
        raise OpenCvLoadedError(
            f"cv2 was imported before {OPENCV_MAX_PIXELS} was set; the decode limit "
            "would not hold. Set it first thing in the process.")
    os.environ[OPENCV_MAX_PIXELS] = str(max_pixels)
