"""What is known about a region no describer could name, in words.

"unclear defect" tells an operator nothing; the region's pixels still say a good deal:
its shape (a thin line, a spot, a patch), its size (frame pixels, millimetres where the
camera's scale is known), its contrast against the surface around it (darker, brighter,
another colour) and where it lies (at an edge of the frame, or inside and towards which
side). The part is taken to fill the frame: no part outline is known here, so "at the
left edge" is the frame's left edge.

Cheap by design (the worker's describe stage pays for it on every unnamed region): one
contour and one rotated rectangle per region, and means over the region and a thin ring
around it, all inside the region's box at the mask's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# a region at least this many times longer than thick is a line
LINE_ELONGATION = 3.0
# a compact region whose long side is at most this share of the frame's long side is a spot
SPOT_SHARE = 0.12
# mean luma (0..255) inside vs around the region: below this difference it is neither
# darker nor brighter
LUMA_STEP = 12.0
# Lab chroma distance (a, b; 0..255 scale) inside vs around: at least this is a colour shift
CHROMA_STEP = 8.0
# a region whose box comes within this share of the frame's side of a border is at that edge
EDGE_SHARE = 0.03
# ring around the region its contrast is measured against, as a share of the mask's long side
RING_SHARE = 0.04


@dataclass(frozen=True)
class RegionFacts:
    shape: str  # "thin line" | "spot" | "patch"
    length_px: float  # the long side (a line's length), frame pixels
    width_px: float  # the short side (a line's thickness), frame pixels
    area_px: float  # frame pixels
    contrast: str | None  # "dark" | "bright" | "discoloured" | None (no clear contrast)
    place: str  # "at the left edge", "in the top left corner", "inside, towards the top"...


def region_facts(mask: np.ndarray, image: np.ndarray | None,
                 frame_size: tuple[int, int] | None = None) -> RegionFacts:  # fmt: skip
    """Facts of one region. `mask` (bool [h, w]) at any size; `image` (RGB uint8) the frame
    at any size (None: no contrast); `frame_size` (width, height) the frame's pixel size
    the lengths are given in (default: the mask's own)."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    fw, fh = frame_size or (w, h)
    sx, sy = fw / w, fh / h
    m8 = m.view(np.uint8) if m.flags.c_contiguous else m.astype(np.uint8)
    x0, y0, bw, bh = cv2.boundingRect(m8)
    if bw == 0:
        raise ValueError("an empty mask has no facts")
    x1, y1 = x0 + bw, y0 + bh
    crop = m8[y0:y1, x0:x1]
    pixels = cv2.countNonZero(crop)
    length, width = _extent(crop, pixels, sx, sy)
    area = float(pixels) * sx * sy
    shape = _shape(length, width, area, max(fw, fh))
    contrast = None if image is None else _contrast(m8, image, (x0, y0, x1, y1))
    return RegionFacts(shape, length, width, area, contrast,
                       _place((x0, y0, x1, y1), w, h))  # fmt: skip


def _extent(crop: np.ndarray, pixels: int, sx: float, sy: float) -> tuple[float, float]:
    """(length, thickness) in frame pixels: the rotated rectangle of the region's outline,
    and for a curved line (a thin region its rectangle fills poorly) the length along it,
    from the area and the thickness the outline implies."""
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = np.concatenate(contours).reshape(-1, 2).astype(np.float32)
    pts = (outline + 0.5) * np.array([sx, sy], np.float32)
    (_c, (a, b), _angle) = cv2.minAreaRect(pts)
    long, short = max(a, b) + min(sx, sy), min(a, b) + min(sx, sy)  # pixel centres -> edges
    area = float(pixels) * sx * sy
    perimeter = sum(cv2.arcLength(c, True) for c in contours) * (sx + sy) / 2
    thickness = min(short, 2 * area / max(perimeter, 1e-6))  # a band: area ~ L t, P ~ 2 L
    if area / (long * short) < 0.35 and thickness > 0 and area / thickness > long:
        return area / thickness, thickness  # curved: its length is along the curve
    return long, short


def _shape(length: float, width: float, area: float, frame_long: float) -> str:
    if length >= LINE_ELONGATION * max(width, 1.0):
        return "thin line"
    return "spot" if length <= SPOT_SHARE * frame_long else "patch"


def _contrast(mask: np.ndarray, image: np.ndarray,
              box: tuple[int, int, int, int]) -> str | None:  # fmt: skip
    """The mean colour inside vs in a ring around the region, compared in Lab (L:
    lightness, a/b: colour)."""
    h, w = mask.shape
    ih, iw = image.shape[:2]
    ring_px = max(2, round(RING_SHARE * max(h, w)))
    x0, y0 = max(0, box[0] - ring_px), max(0, box[1] - ring_px)
    x1, y1 = min(w, box[2] + ring_px), min(h, box[3] + ring_px)
    m = mask[y0:y1, x0:x1]
    # the same window of the image, at the mask's size
    ix0, ix1 = round(x0 * iw / w), max(round(x1 * iw / w), round(x0 * iw / w) + 1)
    iy0, iy1 = round(y0 * ih / h), max(round(y1 * ih / h), round(y0 * ih / h) + 1)
    window = cv2.resize(image[iy0:iy1, ix0:ix1], (x1 - x0, y1 - y0),
                        interpolation=cv2.INTER_AREA)  # fmt: skip
    if window.ndim == 2:
        window = cv2.cvtColor(window, cv2.COLOR_GRAY2RGB)
    ring = cv2.dilate(m, np.ones((2 * ring_px + 1,) * 2, np.uint8)) - m
    if not cv2.countNonZero(ring):  # the region fills the frame: nothing to compare against
        return None
    means = np.array([[cv2.mean(window, m)[:3], cv2.mean(window, ring)[:3]]], np.float32)
    inside, around = cv2.cvtColor(means / 255, cv2.COLOR_RGB2LAB)[0]
    d = inside - around  # L in 0..100, a/b in about -128..127
    luma = float(d[0]) * 255 / 100  # on the 8-bit scale of the steps
    if abs(luma) >= LUMA_STEP:
        return "dark" if luma < 0 else "bright"
    if float(np.hypot(d[1], d[2])) >= CHROMA_STEP:
        return "discoloured"
    return None


def _place(box: tuple[int, int, int, int], w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    mx, my = EDGE_SHARE * w, EDGE_SHARE * h
    edges = [side for side, near in (("top", y0 <= my), ("bottom", y1 >= h - my),
                                     ("left", x0 <= mx), ("right", x1 >= w - mx)) if near]
    if len(edges) >= 3:
        return "across the frame"
    if len(edges) == 2:
        if {"top", "bottom"} == set(edges) or {"left", "right"} == set(edges):
            return "across the frame"
        return f"in the {edges[0]} {edges[1]} corner"
    if edges:
        return f"at the {edges[0]} edge"
    cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
    vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    side = " ".join(s for s in (vertical, horizontal) if s)
    return f"inside, towards the {side}" if side else "inside, in the middle"


def _size(px: float, mm_per_px: float | None) -> str:
    return f"{px:.0f} px ({px * mm_per_px:.1f} mm)" if mm_per_px else f"{px:.0f} px"


def facts_text(facts: RegionFacts, mm_per_px: float | None = None) -> str:
    """"unnamed: a dark thin line, 62 px long, at the left edge"; with the camera's scale
    "... 62 px (3.1 mm) long ..."."""
    words = {"dark": "dark ", "bright": "bright ", "discoloured": "discoloured "}
    noun = f"{words.get(facts.contrast or '', '')}{facts.shape}"
    article = "an" if noun[0] in "aeiou" else "a"
    if facts.shape == "thin line":
        size = f"{_size(facts.length_px, mm_per_px)} long"
    elif facts.shape == "spot":
        size = f"{_size(facts.length_px, mm_per_px)} across"
    else:
        size = f"{facts.length_px:.0f} by {facts.width_px:.0f} px"
        if mm_per_px:
            size += f" ({facts.length_px * mm_per_px:.1f} by {facts.width_px * mm_per_px:.1f} mm)"
    return f"unnamed: {article} {noun}, {size}, {facts.place}"
