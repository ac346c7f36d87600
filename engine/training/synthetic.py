"""Synthetic anomalies with masks, drawn on normal images (training data for the CLAD heads).

Real defects are rare and unlabelled on a new line, so the heads learn "normal vs defect"
from plausible fakes: cut-paste of a patch (CutPaste), a foreign texture or noise patch
(DRAEM-style), scratches and blobs drawn with OpenCV. All randomness comes from the
caller's numpy Generator, so a seed reproduces the data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from engine.defects.foreground import foreground_mask

Kind = Literal["cutpaste", "texture", "noise", "scratch", "blob"]
KINDS: tuple[Kind, ...] = ("cutpaste", "texture", "noise", "scratch", "blob")
# the generic defect kind (engine.defects.defect_kinds) each of these drawings shows; the drawings
# of every generic kind, for the describer, are in engine.training.synthetic_defects
VOCAB_KIND: dict[Kind, str] = {"cutpaste": "misplaced_part", "texture": "contamination",
                               "noise": "contamination", "scratch": "scratch", "blob": "stain"}


def _centre(fg: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(fg)
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


def _blob_mask(
    shape: tuple[int, int], cx: int, cy: int, r: int, rng: np.random.Generator
) -> np.ndarray:
    """An irregular region: a union of a few random ellipses around (cx, cy)."""
    mask = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        ox, oy = rng.integers(-r // 2, r // 2 + 1, size=2) if r > 1 else (0, 0)
        axes = (int(rng.integers(max(2, r // 3), r + 1)), int(rng.integers(max(2, r // 4), r + 1)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (cx + int(ox), cy + int(oy)), axes, angle, 0, 360, 1, -1)
    return mask


def _blend(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    m = mask.astype(np.float32)[..., None] * opacity
    out = image.astype(np.float32) * (1 - m) + patch.astype(np.float32) * m
    return np.clip(out, 0, 255).astype(np.uint8)


def _random_crop(src: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of src, resized to (h, w), randomly rotated by a multiple of 90 degrees."""
    sh, sw = src.shape[:2]
    ch, cw = min(sh, max(8, h)), min(sw, max(8, w))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = np.rot90(src[y : y + ch, x : x + cw], int(rng.integers(4)))
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)


def synthesize(
    image: np.ndarray,
    rng: np.random.Generator,
    donors: Sequence[np.ndarray] = (),
    kind: Kind | None = None,
) -> tuple[np.ndarray, np.ndarray, Kind]:
    """One synthetic defect on an HxWx3 uint8 image -> (image, mask HxW uint8 {0,1}, kind)."""
    h, w = image.shape[:2]
    side = min(h, w)
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    fg = foreground_mask(image)
    cx, cy = _centre(fg, rng)
    r = int(rng.uniform(0.04, 0.12) * side)
    out = image.copy()
    if kind == "scratch":
        mask = np.zeros((h, w), np.uint8)
        pts = [(cx, cy)]
        length = rng.uniform(0.15, 0.4) * side
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 5))):  # a few bends, like a real scratch
            ang += rng.uniform(-0.5, 0.5)
            step = length / 3
            pts.append((int(pts[-1][0] + step * np.cos(ang)), int(pts[-1][1] + step * np.sin(ang))))
        thick = max(2, int(rng.uniform(0.008, 0.025) * side))
        cv2.polylines(mask, [np.array(pts, np.int32)], False, 1, thick, cv2.LINE_AA)
        shade = 255.0 if rng.random() < 0.5 else 0.0
        paint = np.full_like(image, shade)
        out = _blend(image, paint, mask, float(rng.uniform(0.5, 0.9)))
    else:
        mask = _blob_mask((h, w), cx, cy, max(r, 4), rng)
        y0, x0 = max(0, cy - 2 * r), max(0, cx - 2 * r)
        y1, x1 = min(h, cy + 2 * r + 1), min(w, cx + 2 * r + 1)
        bh, bw = y1 - y0, x1 - x0
        if kind == "cutpaste":  # a patch of this or another normal image, elsewhere
            src = donors[int(rng.integers(len(donors)))] if donors and rng.random() < 0.5 else image
            patch = _random_crop(src, bh, bw, rng)
        elif kind == "texture":  # a foreign texture: a donor, heavily recoloured
            src = donors[int(rng.integers(len(donors)))] if donors else image
            patch = _random_crop(src, bh, bw, rng)
            patch = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV)
            patch[..., 0] = (patch[..., 0].astype(int) + int(rng.integers(30, 150))) % 180
            patch = cv2.cvtColor(patch, cv2.COLOR_HSV2RGB)
        elif kind == "noise":
            base = image[y0:y1, x0:x1].astype(np.float32)
            patch = base + rng.normal(0, rng.uniform(30, 80), size=base.shape)
        else:  # blob: a stain or spot of one colour
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            patch = np.broadcast_to(colour, (bh, bw, 3))
        full = out.copy()
        full[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
        keep = np.zeros_like(mask)
        keep[y0:y1, x0:x1] = 1
        mask = mask * keep
        out = _blend(image, full, mask, float(rng.uniform(0.7, 1.0)))
    return out, (mask > 0).astype(np.uint8), kind


def augment_normal(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A normal variant (flip / 90° rotation / small brightness change): no defect added."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    out = np.rot90(out, int(rng.integers(4))) if out.shape[0] == out.shape[1] else out
    gain = float(rng.uniform(0.9, 1.1))
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
