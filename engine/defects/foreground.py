"""Where the object is in an image: used by the region describer's features at inference
and by the synthetic-defect generators in training (training may import this side)."""

from __future__ import annotations

import cv2
import numpy as np


def foreground_mask(image: np.ndarray, thresh: float = 30.0) -> np.ndarray:
    """Pixels that differ from the border colour: where an object's defects can be.

    Objects on a plain background (bottle, capsule) should not get defects in empty
    background; textures fill the frame, so the fallback is the whole image.
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    diff = np.abs(image.astype(np.float32) - np.median(border, axis=0)).max(axis=-1)
    # a shaded background (capsule) varies along the border: scale the cut with that spread
    spread = float(np.abs(border - np.median(border, axis=0)).max(axis=-1).std())
    fg = (diff > max(thresh, 4.0 * spread)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    return fg if fg.mean() > 0.05 else np.ones(image.shape[:2], np.uint8)
