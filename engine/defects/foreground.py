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
    med = np.median(border, axis=0)
    # a shaded background (capsule) varies along the border: scale the cut with that spread
    spread = float(np.abs(border - med).max(axis=-1).std())
    cut = max(thresh, 4.0 * spread)
    if image.dtype == np.uint8 and image.ndim == 3:
        fg = _differs_uint8(image, med, cut)
    else:
        fg = (np.abs(image.astype(np.float32) - med).max(axis=-1) > cut).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    return fg if fg.mean() > 0.05 else np.ones(image.shape[:2], np.uint8)


def _differs_uint8(image: np.ndarray, med: np.ndarray, cut: float) -> np.ndarray:
    """{0,1} uint8: some channel is more than `cut` from the border colour. A uint8
    channel has 256 values, so each channel's answer is a lookup table built with the
    same float32 arithmetic as the per-pixel form (max over channels of |pixel - med| >
    cut), whose float copy of the frame and max over the last axis cost ~5 ms a 256 px
    frame: the region describer computes this on every frame with regions."""
    levels = np.arange(256, dtype=np.float32)
    luts = [(np.abs(levels - med[c]) > cut).astype(np.uint8) for c in range(image.shape[2])]
    planes = cv2.split(np.ascontiguousarray(image))
    fg = cv2.LUT(planes[0], luts[0])
    for plane, lut in zip(planes[1:], luts[1:], strict=True):
        cv2.bitwise_or(fg, cv2.LUT(plane, lut), dst=fg)
    return fg
