"""The pixels of a region that actually stand out from the surface around it.

An anomaly map's region is a blob about ten times the defect it was drawn around (a 5-px
line inside a ~60-px blob, issue 15): described whole, its shape and photometry are
mostly normal surface and the default describer's forest votes 0.2-0.3 over several
kinds. This step sits between region extraction and the describer: inside the region it
keeps the pixels whose colour is far from the ring's robust statistics (median and MAD of
Lab on the surface the region lies on), grows them by hysteresis, and hands that mask to
the describer when it is clean (a few pixels at least, clearly smaller than the region);
otherwise the region itself. The worker, `clad describe` and the demo all reach it
through engine.defects.shape_describer.ShapeDescriber, and the default describer's
training sees its regions through the same step (engine.training.describer_default).
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.defects.region_features import WORK, FramePlanes, _ring, on_surface

# Robust deviations (MAD x 1.4826) get these floors per Lab channel: a flat ring's MAD
# is ~0 and would make sensor noise "stand out"; the same floors as the core's spread.
SD_FLOOR = np.array([2.0, 1.5, 1.5], np.float32)
# A pixel stands out at Z_LOW robust deviations (max over L, a, b) when it connects to one
# at Z_HIGH (hysteresis): the antialiased rim of a dark line joins its centre, a texture's
# lone bright pixels do not seed anything.
Z_LOW, Z_HIGH = 3.0, 5.0
# seeds: also at least this share of the region's strongest deviation (its 99th
# percentile), so on a high-contrast defect the faint halo around it is not a seed
SEED_SHARE = 0.5
# ... and a pixel joins them at this share of that deviation at least: the antialiased or
# blurred rim of a sharp dark line (half its contrast or less) is not the line
LOW_SHARE = 0.5
MIN_PIXELS = 6  # at WORK: fewer pixels standing out is noise, not a defect's shape
# the refined mask is used only when it is at most this share of the region: a region
# whose pixels nearly all stand out is already the defect's mask
MAX_SHARE = 0.6


def work_mask(mask: np.ndarray) -> np.ndarray:
    """A region mask (any resolution) at WORK x WORK, as region_features reads it."""
    m = cv2.resize(np.asarray(mask, np.uint8), (WORK, WORK), interpolation=cv2.INTER_NEAREST)
    if not m.any():  # thinner than a pixel at WORK: its brightest cell (as features_of)
        small = cv2.resize(np.asarray(mask, np.float32), (WORK, WORK), interpolation=cv2.INTER_AREA)
        m = (small >= small.max() * 0.5).astype(np.uint8) if small.max() > 0 else m
    return (m > 0).astype(np.uint8)


def refine_region(planes: FramePlanes, mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` (any resolution) that stand out from the surface around it, as a
    {0,1} uint8 WORK x WORK mask; the region itself (at WORK) when nothing clean does."""
    m = work_mask(mask)
    area = int(np.count_nonzero(m))
    if area < MIN_PIXELS:
        return m
    width = int(np.clip(0.5 * np.sqrt(area), 3, 24))  # the describer's ring width
    bx, by, bw, bh = cv2.boundingRect(m)
    pad = width + 2
    y0, y1 = max(0, by - pad), min(WORK, by + bh + pad)
    x0, x1 = max(0, bx - pad), min(WORK, bx + bw + pad)
    win = np.ascontiguousarray(m[y0:y1, x0:x1])
    sel = win > 0
    ring = _ring(win, width)
    lab = planes.lab[y0:y1, x0:x1]
    if np.count_nonzero(ring) < 8:
        return m
    if planes.scene:  # the surface the region lies on, not the background beyond the rim
        window = (slice(y0, y1), slice(x0, x1))
        ring, sel = on_surface(planes, planes.fg[window], ring, sel, window)
    if np.count_nonzero(sel) < MIN_PIXELS:
        return m
    ring_lab = lab[ring]
    med = np.median(ring_lab, axis=0)
    sd = 1.4826 * np.median(np.abs(ring_lab - med), axis=0) + SD_FLOOR
    z = np.zeros(sel.shape, np.float32)
    z[sel] = (np.abs(lab[sel] - med) / sd).max(axis=1)
    top = float(np.percentile(z[sel], 99))
    low = z >= max(Z_LOW, LOW_SHARE * top)
    seeds = z >= max(Z_HIGH, SEED_SHARE * top)
    if np.count_nonzero(seeds) == 0:
        return m
    n, comp = cv2.connectedComponents(low.astype(np.uint8), connectivity=8)
    seeded = np.unique(comp[seeds])
    keep = np.isin(comp, seeded[seeded > 0])
    # components of a few pixels are noise in a textured surface; the defect's are not
    sizes = np.bincount(comp[keep], minlength=n)
    small = np.flatnonzero((sizes > 0) & (sizes < 4))
    keep &= ~np.isin(comp, small)
    kept = int(np.count_nonzero(keep))
    if kept < MIN_PIXELS or kept > MAX_SHARE * area:
        return m
    out = np.zeros_like(m)
    out[y0:y1, x0:x1] = keep
    return out
