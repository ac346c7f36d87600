"""Plain manufactured parts drawn from scratch: normal images for the default describer's
drawn defects beyond the few products of the shared data sets.

The shared data hold six products, four of them textures or photographed objects with
their own look; a describer trained on defects drawn only there learns those products'
cues (how textured the frame is, what the background is). Simple parts (a disc, a
washer, a plate, a bar) in random colours, sizes, shading and sensor noise, on a
plain background, add machined and moulded surfaces of the kind a line camera sees.
All randomness comes from the caller's Generator.
"""

from __future__ import annotations

import cv2
import numpy as np

SHAPES = ("disc", "washer", "plate", "rounded_plate", "ellipse", "bar")


def _colour(rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """A grey, lightly tinted (bare metal, plastic) or, one time in four, a colour."""
    if rng.random() < 0.25:
        return rng.uniform(lo, hi, size=3)
    return np.full(3, rng.uniform(lo, hi)) + rng.uniform(-8, 8, size=3)


# the share of clean parts when they are asked for (describer_default --clean-parts):
# evenly lit, no machining marks, under half a grey level of sensor noise (a moulded or
# painted part under diffuse light), where a defect stands out by many ring deviations
CLEAN_SHARE = 0.3


def plain_part(rng: np.random.Generator, size: int = 256, clean_share: float = 0.0) -> np.ndarray:
    """One normal image (size x size x 3 uint8 RGB) of a random plain part, clean with
    probability `clean_share` (0: the draws of the parts made before the option)."""
    clean = clean_share > 0 and rng.random() < clean_share
    bg = _colour(rng, 10, 120)
    part = _colour(rng, 60, 235)
    if abs(float(part.mean() - bg.mean())) < 30:  # keep the part visible on its background
        part = np.clip(part + (40 if part.mean() >= bg.mean() else -40), 0, 255)
    mask = np.zeros((size, size), np.uint8)
    c = (size // 2 + int(rng.integers(-size // 16, size // 16 + 1)),
         size // 2 + int(rng.integers(-size // 16, size // 16 + 1)))  # fmt: skip
    r = int(rng.uniform(0.28, 0.44) * size)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    angle = float(rng.uniform(0, 180))
    if shape in ("disc", "washer"):
        cv2.circle(mask, c, r, 1, -1, cv2.LINE_8)
        if shape == "washer":
            cv2.circle(mask, c, int(r * rng.uniform(0.25, 0.55)), 0, -1, cv2.LINE_8)
    elif shape == "ellipse":
        cv2.ellipse(mask, c, (r, int(r * rng.uniform(0.5, 0.9))), angle, 0, 360, 1, -1)
    else:
        ratio = rng.uniform(0.2, 0.45) if shape == "bar" else rng.uniform(0.6, 1.0)
        box = cv2.boxPoints((c, (2 * r, 2 * r * ratio), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
        if shape == "rounded_plate":
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (r // 3 * 2 + 1, r // 3 * 2 + 1))
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, k)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    light = rng.uniform(0, 2 * np.pi)  # a soft light gradient across the part
    ramp = ((np.cos(light) * (xs - c[0]) + np.sin(light) * (ys - c[1])) / size)[..., None]
    sel = mask > 0
    img[sel] = (part + ramp * (0.0 if clean else rng.uniform(0, 60)))[sel]
    if not clean and rng.random() < 0.5:  # machining marks: fine parallel streaks
        streaks = np.sin(xs * rng.uniform(0.5, 2.0) + ys * rng.uniform(-0.3, 0.3))
        img[sel] += (streaks[..., None] * rng.uniform(2, 8))[sel]
    img = cv2.GaussianBlur(img, (0, 0), 0.7)  # a lens: no perfectly sharp edge
    # sensor noise (some nearly none; under half a grey level on a clean part)
    img += rng.normal(0, rng.uniform(0, 0.5) if clean else rng.uniform(0.3, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
