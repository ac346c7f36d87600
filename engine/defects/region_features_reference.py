"""The whole-frame implementation of the region features, as it was before the windowed
fast path (engine.defects.region_features, commit 73dfca4) plus the default describer v3's
surface rules (the closed foreground, the ring and the region's body on the surface it
lies on) and the enclosed-spot option (`enclosed_share`, off by default): every plane
and every mask is taken over the full WORK x WORK frame, once per region.

Not used at run time. It is the specification the fast path is pinned against
(tests/unit/engine/defects/test_region_features.py on real regions) and the "before"
of bench/describe.py; the shipped forest was trained on these numbers.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

# the interface and the thinning rule are shared with the fast path: what is pinned is how
# the numbers are computed, not their names
from engine.defects.region_features import (
    _NEIGHBOUR_BITS,
    N_FEATURES,
    WORK,
    _zhang_suen_drop_table,
)


@functools.cache
def _drop_tables() -> tuple[np.ndarray, np.ndarray]:
    return _zhang_suen_drop_table(0), _zhang_suen_drop_table(1)


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a {0,1} uint8 mask (one-pixel skeleton). Each sub-iteration
    is one 3x3 filter giving every pixel its neighbour code and a table lookup: the
    region describer runs this on every region the worker finds."""
    img = mask.astype(np.uint8)  # a copy: the caller's mask is left alone
    while True:
        changed = False
        for table in _drop_tables():
            codes = cv2.filter2D(img, cv2.CV_32F, _NEIGHBOUR_BITS,
                                 borderType=cv2.BORDER_CONSTANT).astype(np.uint8)  # fmt: skip
            drop = (img == 1) & table[codes]
            if drop.any():
                img[drop] = 0
                changed = True
        if not changed:
            return img


def _skeleton_stats(skel: np.ndarray) -> tuple[float, int, int, float]:
    """(length in px, endpoints, branch points, straightness) of a skeleton."""
    ys, xs = np.nonzero(skel)
    if len(ys) == 0:
        return 0.0, 0, 0, 1.0
    k = np.ones((3, 3), np.float32)
    k[1, 1] = 0
    nb = cv2.filter2D(skel.astype(np.float32), -1, k, borderType=cv2.BORDER_CONSTANT)[ys, xs]
    ends, branches = int((nb == 1).sum()), int((nb >= 3).sum())
    length = float(len(ys))
    pts = np.stack([xs, ys], 1).astype(np.float32)
    if len(pts) >= 2:
        centred = pts - pts.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        straight = float((proj.max() - proj.min() + 1) / length)
    else:
        straight = 1.0
    return length, ends, branches, min(straight, 1.0)


def _shape(m: np.ndarray) -> tuple[list[float], np.ndarray]:
    """The 12 shape numbers of a non-empty {0,1} mask, and its distance transform."""
    side = float(WORK)
    area = float(m.sum())
    ys, xs = np.nonzero(m)
    n_comp = cv2.connectedComponents(m, connectivity=8)[0] - 1
    bbox = float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    pts = np.stack([xs, ys], 1).astype(np.int32)
    hull = float(cv2.contourArea(cv2.convexHull(pts))) if len(pts) >= 3 else area
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perim = float(sum(cv2.arcLength(c, True) for c in contours)) or 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) if len(xs) > 1 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov + 1e-3 * np.eye(2)))
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    pad = 2  # thin only the region's box: the loop runs over far fewer pixels
    y0, y1 = max(0, ys.min() - pad), min(WORK, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(WORK, xs.max() + pad + 1)
    skel = np.zeros_like(m)
    skel[y0:y1, x0:x1] = _thin(m[y0:y1, x0:x1])
    length, ends, branches, straight = _skeleton_stats(skel)
    on_skel = dist[skel > 0]
    thick = 2.0 * float(on_skel.mean() if len(on_skel) else dist.max())
    return [np.log(area / side**2), np.log1p(n_comp - 1), area / bbox, area / max(hull, area),
            4 * np.pi * area / perim**2, np.sqrt(ev[0] / ev[1]), thick / side,
            thick / max(length, thick), length / side, np.log1p(ends), np.log1p(branches),
            straight], dist  # fmt: skip


def _core(grey: np.ndarray, lab: np.ndarray, sel: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """The pixels of a region that stand out from its ring (brightness or colour at least
    half as far from the ring, in ring deviations, as the region's extreme, and 1.5
    deviations at least): an anomaly map's region is a blob around a defect that may be a
    2-px line, and the line's shape is what tells a scratch from a stain."""
    mu, sd = lab[ring].mean(0), lab[ring].std(0) + np.array([2.0, 1.5, 1.5], np.float32)
    z = np.abs((lab - mu) / sd).max(axis=-1)
    top = float(np.percentile(z[sel], 99))
    core = (sel & (z >= max(1.5, 0.5 * top))).astype(np.uint8)
    return core if core.sum() >= 4 else sel.astype(np.uint8)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    gap = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return (cv2.dilate(mask, k) > 0) & (gap == 0)


def foreground_mask(image: np.ndarray, thresh: float = 30.0) -> np.ndarray:
    """engine.defects.foreground.foreground_mask as it was: a float plane per frame."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    diff = np.abs(image.astype(np.float32) - np.median(border, axis=0)).max(axis=-1)
    spread = float(np.abs(border - np.median(border, axis=0)).max(axis=-1).std())
    fg = (diff > max(thresh, 4.0 * spread)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    return fg if fg.mean() > 0.05 else np.ones(image.shape[:2], np.uint8)


def region_features(image: np.ndarray, mask: np.ndarray, enclosed_share: float = 0.0
                    ) -> np.ndarray:  # fmt: skip
    """HxWx3 uint8 RGB + a region mask (any resolution, bool/{0,1}) -> [N_FEATURES] float32."""
    img = cv2.resize(image, (WORK, WORK), interpolation=cv2.INTER_AREA)
    m = cv2.resize(np.asarray(mask, np.uint8), (WORK, WORK), interpolation=cv2.INTER_NEAREST)
    if m.sum() == 0:  # a region thinner than a pixel at WORK: keep its brightest cell
        small = cv2.resize(np.asarray(mask, np.float32), (WORK, WORK), interpolation=cv2.INTER_AREA)
        m = (small >= small.max() * 0.5).astype(np.uint8) if small.max() > 0 else m
    if m.sum() == 0:
        return np.zeros(N_FEATURES, np.float32)
    side = float(WORK)
    area = float(m.sum())
    sel = m > 0
    ys, xs = np.nonzero(m)
    shape, dist = _shape(m)
    border = min(xs.min(), ys.min(), WORK - 1 - xs.max(), WORK - 1 - ys.max()) / side
    # closed: a thin scratch as dark as the background still lies on the object
    fg = cv2.morphologyEx(foreground_mask(img), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    if enclosed_share > 0:  # a small hole the part encloses (no frame edge) is on the part
        _n, holes = cv2.connectedComponents((fg == 0).astype(np.uint8), connectivity=8)
        edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        for label in range(1, _n):
            hole = holes == label
            if label not in edge and hole.sum() <= enclosed_share * WORK * WORK:
                fg[hole] = 1
    scene = float(fg.mean() < 0.95)  # an object on a background, not a texture
    outline = cv2.dilate(fg - cv2.erode(fg, np.ones((3, 3), np.uint8)),
                         np.ones((7, 7), np.uint8)) if scene else np.zeros_like(fg)  # fmt: skip

    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    grey = lab[..., 0]
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    width = int(np.clip(0.5 * np.sqrt(area), 3, 24))
    ring = _ring(m, width)
    if ring.sum() < 8:  # the region fills the frame: compare with everything else
        ring = ~sel if (~sel).sum() >= 8 else np.ones_like(sel)
    if scene:  # compare with the surface the region lies on, not the background beyond
        side = fg > 0 if fg[ring].mean() >= 0.5 else fg == 0
        ring = ring & side if (ring & side).sum() >= 8 else ring
        # a map's blob spills over the object's edge: when the region lies mostly on the
        # ring's surface, its off-surface pixels that reach beyond the region are not the
        # defect (a dark spot inside, off-surface but enclosed, stays; a bite out of the
        # outline, mostly off the surface, keeps all of its pixels)
        body = sel
        if side[sel].mean() >= 0.75:
            _n, cc = cv2.connectedComponents((~side).astype(np.uint8), connectivity=8)
            beyond = np.unique(cc[~side & ~sel])
            body = sel & ~np.isin(cc, beyond[beyond > 0])
    else:
        body = sel
    li, lr = grey[body], grey[ring]
    mu_r, sd_r = float(lr.mean()), float(lr.std()) + 2.0
    d = lab[body].mean(0) - lab[ring].mean(0)
    chroma = float(np.hypot(d[1], d[2]))
    s_in, s_r = hsv[..., 1][body], hsv[..., 1][ring]

    def hue_mean(where: np.ndarray) -> complex:
        h = hsv[..., 0][where] * (np.pi / 90.0)
        w = hsv[..., 1][where] / 255.0
        return complex(float((w * np.cos(h)).mean()), float((w * np.sin(h)).mean()))

    hi, hr = hue_mean(body), hue_mean(ring)
    hue_shift = abs(hi - hr)  # a saturation-weighted hue difference (0: same tint)
    edge = (cv2.dilate(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0
    middle = body & (dist > np.median(dist[body]))
    rim = body & ~middle
    centre_rim = (float(grey[middle].mean()) - float(grey[rim].mean())) / sd_r \
        if middle.any() and rim.any() else 0.0  # fmt: skip
    ab_in = float(lab[..., 1:][body].std(0).mean()) + 1.0
    ab_r = float(lab[..., 1:][ring].std(0).mean()) + 1.0
    core = _core(grey, lab, body, ring)
    core_shape, _ = _shape(core)
    out = [
        *shape, border, float(fg[sel].mean()), float(outline[sel].mean() > 0) * float(
            (outline[sel] > 0).mean()), scene, *core_shape, float(core.sum()) / area,
        (float(li.mean()) - mu_r) / sd_r, (float(li.mean()) - mu_r) / 100.0, d[1] / 50.0,
        d[2] / 50.0, chroma / 50.0, chroma / (chroma + abs(float(d[0])) + 1.0),
        (float(s_in.mean()) - float(s_r.mean())) / 255.0, hue_shift,
        np.log((float(li.std()) + 1.0) / sd_r), np.log((float(grad[body].mean()) + 1.0)
                                                       / (float(grad[ring].mean()) + 1.0)),
        np.log((float(lap[body].mean()) + 1.0) / (float(lap[ring].mean()) + 1.0)),
        np.log((float(grad[edge].mean()) + 1.0) / (float(grad[ring].mean()) + 1.0)),
        float((li < mu_r - 2 * sd_r).mean()), float((li > mu_r + 2 * sd_r).mean()),
        (float(np.percentile(li, 5)) - mu_r) / sd_r, (float(np.percentile(li, 95)) - mu_r) / sd_r,
        np.log(ab_in / ab_r), centre_rim, float(grey.std()) / 50.0,
    ]  # fmt: skip
    return np.nan_to_num(np.asarray(out, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
