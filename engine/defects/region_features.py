"""Product-agnostic features of one defect region: its shape and how its pixels differ
from a ring around it.

A scratch is long and thin whatever it is on, a hole is round, dark in the middle and
sharp-edged, a stain shifts colour but keeps the texture, contamination brings a
texture of its own. CNN embeddings of one product do not carry those regularities to
another; these numbers do. Input: an RGB frame and a region mask at any resolution;
both are brought to WORK x WORK so every number is on one scale.

The worker describes every region it finds, so the numbers are computed where they
live: the frame's planes (foreground, Lab, HSV, gradients) once per frame, each
region's masks on its box grown by the ring's width. They are the numbers of the
whole-frame implementation the forest was trained on
(engine.defects.region_features_reference), which the tests pin them against.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.defects.foreground import foreground_mask

WORK = 256  # the side features are computed at

FEATURE_NAMES: tuple[str, ...] = (
    # shape
    "log_area_share", "n_components", "extent", "solidity", "circularity", "elongation",
    "thickness", "thickness_over_length", "skeleton_length", "endpoints", "branch_points",
    "straightness", "border_distance", "on_foreground", "on_outline", "object_scene",
    # the same shape numbers of the region's core (the pixels that stand out), its share
    *(f"core_{n}" for n in ("log_area_share", "n_components", "extent", "solidity",
                            "circularity", "elongation", "thickness", "thickness_over_length",
                            "skeleton_length", "endpoints", "branch_points", "straightness")),
    "core_share",
    # photometry, inside vs the ring around the region
    "dL_z", "dL", "da", "db", "chroma_shift", "chroma_share", "d_saturation", "hue_shift",
    "std_ratio", "grad_ratio", "lap_ratio", "edge_sharpness", "dark_share", "bright_share",
    "p05_z", "p95_z", "colour_std_ratio", "centre_minus_rim", "image_texture",
)  # fmt: skip
N_FEATURES = len(FEATURE_NAMES)


# The 8 neighbours as bits, N=1, NE=2, E=4, SE=8, S=16, SW=32, W=64, NW=128 (filter2D
# correlates: kernel[1 + dy, 1 + dx] weighs the pixel at (y + dy, x + dx)).
_NEIGHBOUR_BITS = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.float32)


def _zhang_suen_drop_table(step: int) -> np.ndarray:
    """[256] bool: whether a foreground pixel with this neighbour code is removed in this
    sub-iteration of Zhang-Suen thinning."""
    table = np.zeros(256, bool)
    for code in range(256):
        n = [(code >> i) & 1 for i in range(8)]  # P2..P9 clockwise from north
        seq = n + n[:1]
        transitions = sum(1 for i in range(8) if seq[i] == 0 and seq[i + 1] == 1)
        if step == 0:
            c1, c2 = n[0] * n[2] * n[4], n[2] * n[4] * n[6]
        else:
            c1, c2 = n[0] * n[2] * n[6], n[0] * n[4] * n[6]
        table[code] = 2 <= sum(n) <= 6 and transitions == 1 and c1 == 0 and c2 == 0
    return table


@functools.cache
def _drop_luts() -> tuple[np.ndarray, np.ndarray]:
    """The two sub-iterations' drop tables as uint8 lookup tables for cv2.LUT."""
    return (_zhang_suen_drop_table(0).astype(np.uint8),
            _zhang_suen_drop_table(1).astype(np.uint8))  # fmt: skip


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a {0,1} uint8 mask (one-pixel skeleton). Each sub-iteration
    is one 3x3 filter giving every pixel its neighbour code, a table lookup and a masked
    subtraction, all in OpenCV on uint8 (the codes are sums of distinct bits, at most
    255, so the uint8 filter is exact): the region describer runs this twice on every
    region the worker finds, about 24 sub-iterations each, and numpy's float planes and
    boolean indexing cost several times as much per sub-iteration."""
    img = mask.astype(np.uint8)  # a copy: the caller's mask is left alone
    while True:
        changed = False
        for table in _drop_luts():
            codes = cv2.filter2D(img, -1, _NEIGHBOUR_BITS, borderType=cv2.BORDER_CONSTANT)
            drop = cv2.bitwise_and(cv2.LUT(codes, table), img)
            if cv2.countNonZero(drop):
                cv2.subtract(img, drop, dst=img)
                changed = True
        if not changed:
            return img


def _skeleton_stats(skel: np.ndarray, y0: int = 0, x0: int = 0) -> tuple[float, int, int, float]:
    """(length in px, endpoints, branch points, straightness) of a skeleton window whose
    top-left pixel sits at (y0, x0) of the frame."""
    ys, xs = np.nonzero(skel)
    if len(ys) == 0:
        return 0.0, 0, 0, 1.0
    k = np.ones((3, 3), np.float32)
    k[1, 1] = 0
    # neighbour counts (0..8) on uint8: exact, as on a float copy
    nb = cv2.filter2D(skel, -1, k, borderType=cv2.BORDER_CONSTANT)[ys, xs]
    ends, branches = int((nb == 1).sum()), int((nb >= 3).sum())
    length = float(len(ys))
    pts = np.stack([xs + x0, ys + y0], 1).astype(np.float32)
    if len(pts) >= 2:
        centred = pts - pts.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        straight = float((proj.max() - proj.min() + 1) / length)
    else:
        straight = 1.0
    return length, ends, branches, min(straight, 1.0)


def _shape(m: np.ndarray, y0: int, x0: int) -> tuple[list[float], np.ndarray]:
    """The 12 shape numbers of a non-empty {0,1} mask window whose top-left pixel sits at
    (y0, x0) of the WORK frame, and the window's distance transform. The window holds
    the mask with a margin of at least 2 px (or the frame's edge): distances, contours
    and the skeleton's neighbours then come out as on the whole frame, and the pixel
    coordinates are taken in the frame so moments and hulls are the same numbers."""
    side = float(WORK)
    area = float(m.sum())
    ys, xs = np.nonzero(m)
    ys, xs = ys + y0, xs + x0
    n_comp = cv2.connectedComponents(m, connectivity=8)[0] - 1
    bbox = float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perim = float(sum(cv2.arcLength(c, True) for c in contours)) or 1.0
    # the hull of the outer contours' pixels is the hull of all pixels (its corners are
    # extreme pixels, which lie on an outer contour), and its area on integer corners
    # is exact: the same number from a few points instead of every pixel
    outer = np.concatenate(contours).reshape(-1, 2) + np.array([x0, y0], np.int32)
    hull = float(cv2.contourArea(cv2.convexHull(outer))) if area >= 3 else area
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) if len(xs) > 1 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov + 1e-3 * np.eye(2)))
    # on the whole frame: OpenCV's chamfer distances differ in the last bit with the
    # window's position, and `dist > median` below would split ties differently
    box = np.s_[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
    frame = np.zeros((WORK, WORK), np.uint8)
    frame[box] = m
    dist = cv2.distanceTransform(frame, cv2.DIST_L2, 3)[box]
    pad = 2  # thin only the region's box: the loop runs over far fewer pixels
    by0, by1 = max(0, ys.min() - pad) - y0, min(WORK, ys.max() + pad + 1) - y0
    bx0, bx1 = max(0, xs.min() - pad) - x0, min(WORK, xs.max() + pad + 1) - x0
    skel = _thin(m[by0:by1, bx0:bx1])
    length, ends, branches, straight = _skeleton_stats(skel, y0 + by0, x0 + bx0)
    on_skel = dist[by0:by1, bx0:bx1][skel > 0]
    thick = 2.0 * float(on_skel.mean() if len(on_skel) else dist.max())
    return [np.log(area / side**2), np.log1p(n_comp - 1), area / bbox, area / max(hull, area),
            4 * np.pi * area / perim**2, np.sqrt(ev[0] / ev[1]), thick / side,
            thick / max(length, thick), length / side, np.log1p(ends), np.log1p(branches),
            straight], dist  # fmt: skip


def _core(lab_sel: np.ndarray, lab_ring: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """The pixels of a region that stand out from its ring (brightness or colour at least
    half as far from the ring, in ring deviations, as the region's extreme, and 1.5
    deviations at least): an anomaly map's region is a blob around a defect that may be a
    2-px line, and the line's shape is what tells a scratch from a stain. `lab_sel` and
    `lab_ring` are the Lab pixels of the region and of its ring; only the region's
    pixels are scored, the only ones the core can hold."""
    mu, sd = lab_ring.mean(0), lab_ring.std(0) + np.array([2.0, 1.5, 1.5], np.float32)
    dev = np.abs((lab_sel - mu) / sd)
    # the max over 3 channels as two elementwise maxima: the same numbers, where numpy's
    # reduction over a last axis of 3 costs several times more
    z = np.maximum(np.maximum(dev[:, 0], dev[:, 1]), dev[:, 2])
    top = float(np.percentile(z, 99))
    keep = z >= max(1.5, 0.5 * top)
    if np.count_nonzero(keep) < 4:
        return sel.astype(np.uint8)
    core = np.zeros(sel.shape, np.uint8)
    core[sel] = keep
    return core


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    gap = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return (_disc_dilate(mask, width) > 0) & (gap == 0)


@functools.cache
def _disc_rows(width: int) -> tuple[int, ...]:
    """Half-width of each row of OpenCV's (2 width + 1)-square ellipse element (-1: empty)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return tuple(int(np.flatnonzero(r).max()) - width if r.any() else -1 for r in k)


def _disc_dilate(mask: np.ndarray, width: int) -> np.ndarray:
    """cv2.dilate by the ellipse element, row by row of the element: a 1-row dilation
    per distinct half-width (OpenCV runs those in O(1) per pixel), shifted and maxed.
    The same pixels; a region's ring element is up to 49 px wide, where the 2-D
    dilation costs O(element area) per pixel."""
    h = mask.shape[0]
    out = np.zeros_like(mask)
    by_half: dict[int, np.ndarray] = {}
    for i, half in enumerate(_disc_rows(width)):
        dy = i - width  # element row i reaches the source row y + dy
        if half < 0 or abs(dy) >= h:
            continue
        if half not in by_half:
            by_half[half] = cv2.dilate(mask, np.ones((1, 2 * half + 1), np.uint8))
        src = by_half[half]
        if dy >= 0:
            np.maximum(out[: h - dy], src[dy:], out=out[: h - dy])
        else:
            np.maximum(out[-dy:], src[: h + dy], out=out[-dy:])
    return out


@dataclass(frozen=True)
class FramePlanes:
    """What every region of one frame reads, at WORK x WORK: its foreground, Lab, HSV and
    gradient planes. Computed once per frame, not once per region: a frame with several
    regions used to redo all of it for each."""

    fg: np.ndarray  # uint8 foreground mask (engine.defects.foreground)
    scene: float  # 1.0: an object on a background, 0.0: a texture filling the frame
    outline: np.ndarray  # uint8, the object's outline grown by 3 px (zeros for a texture)
    lab: np.ndarray  # float32, L in [0, 100], a and b centred on 0
    hsv: np.ndarray  # float32 (OpenCV ranges)
    gx: np.ndarray  # float32 Sobel derivatives of L (a region takes their magnitude on
    gy: np.ndarray  # its window: np.hypot on a whole frame costs more than the Sobels)
    lap: np.ndarray  # float32 |Laplacian| of L
    texture: float  # the image_texture feature (std of L / 50)
    # connected components of the pixels off each surface, made when a region first asks
    _components: dict[bool, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def off_surface(self, on_part: bool) -> tuple[np.ndarray, np.ndarray]:
        """(labels, pixel count per label) of the 8-connected components of the pixels off
        a surface (on_part: the surface is the part, so the background's components),
        over the whole frame: whether a component reaches beyond a region is a property
        of the frame, not of the region's window."""
        if on_part not in self._components:
            off = (self.fg == 0) if on_part else (self.fg > 0)
            _n, labels = cv2.connectedComponents(off.astype(np.uint8), connectivity=8)
            self._components[on_part] = (labels, np.bincount(labels.ravel()))
        return self._components[on_part]


# Option (off unless a describer was trained with it, describer.json's
# features.enclosed_share): an off-foreground component that the part encloses (it touches
# no frame edge) and that holds at most this share of the frame lies on the part: a spot
# whose colour happens to be near the background's (a brown stain on a grey part on a
# dark conveyor), not a hole through it, so its rim is no outline. A washer's bore (5% of
# the frame in the demo) stays background.
ENCLOSED_SHARE = 0.01


def fill_enclosed(fg: np.ndarray, share: float) -> np.ndarray:
    """The foreground with its enclosed holes of at most `share` of the frame filled."""
    h, w = fg.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats((fg == 0).astype(np.uint8),
                                                           connectivity=8)  # fmt: skip
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    small = stats[:, cv2.CC_STAT_AREA] <= share * h * w
    fill = inside & small
    fill[0] = False  # label 0: the foreground itself
    if n <= 1 or not fill.any():
        return fg
    return np.where(fill[labels], np.uint8(1), fg).astype(np.uint8)


def frame_planes(image: np.ndarray, enclosed_share: float = 0.0) -> FramePlanes:
    """HxWx3 uint8 RGB (any resolution) -> its planes at WORK x WORK; `enclosed_share` > 0:
    small enclosed off-foreground spots lie on the part (ENCLOSED_SHARE)."""
    img = cv2.resize(image, (WORK, WORK), interpolation=cv2.INTER_AREA)
    # closed: a thin scratch as dark as the background still lies on the object
    fg = cv2.morphologyEx(foreground_mask(img), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    if enclosed_share > 0:
        fg = fill_enclosed(fg, enclosed_share)
    scene = float(fg.mean() < 0.95)  # an object on a background, not a texture
    outline = cv2.dilate(fg - cv2.erode(fg, np.ones((3, 3), np.uint8)),
                         np.ones((7, 7), np.uint8)) if scene else np.zeros_like(fg)  # fmt: skip
    lab = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2LAB), _lab_lut())
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    grey = lab[..., 0]
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    return FramePlanes(fg, scene, outline, lab, hsv, gx, gy, lap, float(grey.std()) / 50.0)


@functools.cache
def _lab_lut() -> np.ndarray:
    """[1, 256, 3] float32: OpenCV's 8-bit Lab -> L in [0, 100], a and b centred on 0, by
    the float32 arithmetic the features were trained with (L * (100 / 255), a - 128,
    b - 128) done once per level instead of on three strided planes of every frame."""
    levels = np.arange(256, dtype=np.float32)
    lum = levels.copy()
    lum *= 100.0 / 255.0
    return np.stack([lum, levels - 128.0, levels - 128.0], -1).reshape(1, 256, 3)


def region_features(image: np.ndarray, mask: np.ndarray, enclosed_share: float = 0.0
                    ) -> np.ndarray:  # fmt: skip
    """HxWx3 uint8 RGB + a region mask (any resolution, bool/{0,1}) -> [N_FEATURES] float32."""
    return features_of(frame_planes(image, enclosed_share), mask)


def frame_region_features(image: np.ndarray, masks: Sequence[np.ndarray],
                          enclosed_share: float = 0.0) -> np.ndarray:  # fmt: skip
    """The features of several regions of one frame [R, N_FEATURES], its planes made once."""
    if len(masks) == 0:
        return np.zeros((0, N_FEATURES), np.float32)
    planes = frame_planes(image, enclosed_share)
    return np.stack([features_of(planes, m) for m in masks])


def features_of(planes: FramePlanes, mask: np.ndarray) -> np.ndarray:
    """One region's features from its frame's planes: the same numbers as on the whole
    frame (engine.defects.region_features_reference), computed on the region's box grown
    by the ring's width. Every mask and plane below is that window; the means, spreads
    and percentiles read the same pixels in the same order as on the whole frame."""
    m = cv2.resize(np.asarray(mask, np.uint8), (WORK, WORK), interpolation=cv2.INTER_NEAREST)
    if not m.any():  # a region thinner than a pixel at WORK: keep its brightest cell
        small = cv2.resize(np.asarray(mask, np.float32), (WORK, WORK), interpolation=cv2.INTER_AREA)
        m = (small >= small.max() * 0.5).astype(np.uint8) if small.max() > 0 else m
    if not m.any():
        return np.zeros(N_FEATURES, np.float32)
    bx, by, bw, bh = cv2.boundingRect(m)
    area = float(np.count_nonzero(m))
    width = int(np.clip(0.5 * np.sqrt(area), 3, 24))
    # the ring reaches `width` px past the box, the edge band and the skeleton's pad 2 px
    pad = width + 2
    out = _window_features(planes, m, max(0, by - pad), min(WORK, by + bh + pad),
                           max(0, bx - pad), min(WORK, bx + bw + pad), width)  # fmt: skip
    if out is None:  # the ring is too small: the reference compares with the whole frame
        out = _window_features(planes, m, 0, WORK, 0, WORK, width, whole=True)
    assert out is not None
    return out


def on_surface(planes: FramePlanes, fg: np.ndarray, ring: np.ndarray, sel: np.ndarray,
               window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(ring, body) on an object scene: the ring cut to the surface its majority lies on
    (the part or the background) when 8+ of its pixels do, and the region without the
    off-surface pixels whose component reaches beyond it. `fg`, `ring`, `sel`: the
    window's foreground, ring and region; `window`: its place in the frame.

    A map's blob spills over the object's edge: when the region lies mostly (75%) on the
    ring's surface, those pixels are the background, not the defect (an enclosed dark
    spot stays; a bite out of the outline, mostly off the surface, keeps all of its
    pixels)."""
    on_part = bool(fg[ring].mean() >= 0.5)
    surface = fg > 0 if on_part else fg == 0
    ring = ring & surface if (ring & surface).sum() >= 8 else ring
    body = sel
    if surface[sel].mean() >= 0.75:
        labels, counts = planes.off_surface(on_part)
        win = labels[window]
        inside = np.bincount(win[sel], minlength=len(counts))
        reach = np.flatnonzero(counts > inside)
        body = sel & ~np.isin(win, reach[reach > 0])
    return ring, body


def _window_features(planes: FramePlanes, m_full: np.ndarray, y0: int, y1: int, x0: int,
                     x1: int, width: int, whole: bool = False) -> np.ndarray | None:  # fmt: skip
    """The features on the window [y0:y1, x0:x1]; None when the ring around the region
    holds under 8 px and the window is not the whole frame (the fallback ring, everything
    outside the region, is not in the window)."""
    side = float(WORK)
    m = np.ascontiguousarray(m_full[y0:y1, x0:x1])
    area = float(m.sum())
    sel = m > 0
    ring = _ring(m, width)
    if ring.sum() < 8:  # the region fills the frame: compare with everything else
        if not whole:
            return None
        ring = ~sel if (~sel).sum() >= 8 else np.ones_like(sel)
    ys, xs = np.nonzero(m)
    ys, xs = ys + y0, xs + x0
    shape, dist = _shape(m, y0, x0)
    border = min(xs.min(), ys.min(), WORK - 1 - xs.max(), WORK - 1 - ys.max()) / side
    fg, outline = planes.fg[y0:y1, x0:x1], planes.outline[y0:y1, x0:x1]
    lab, hsv = planes.lab[y0:y1, x0:x1], planes.hsv[y0:y1, x0:x1]
    grad = np.hypot(planes.gx[y0:y1, x0:x1], planes.gy[y0:y1, x0:x1])
    lap = planes.lap[y0:y1, x0:x1]
    grey = lab[..., 0]
    body = sel
    if planes.scene:  # compare with the surface the region lies on, not the background beyond
        ring, body = on_surface(planes, fg, ring, sel, (slice(y0, y1), slice(x0, x1)))
    li, lr = grey[body], grey[ring]
    mu_r, sd_r = float(lr.mean()), float(lr.std()) + 2.0
    lab_sel, lab_ring = lab[body], lab[ring]
    d = lab_sel.mean(0) - lab_ring.mean(0)
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
    core = _core(lab_sel, lab_ring, body)
    core_shape, _ = _shape(core, y0, x0)
    scene = planes.scene
    grad_r = float(grad[ring].mean()) + 1.0
    on_outline = outline[sel]
    # two calls, not one with [5, 95]: numpy interpolates a list of quantiles with
    # different rounding, and these are the reference's numbers to the bit
    p05, p95 = float(np.percentile(li, 5)), float(np.percentile(li, 95))
    out = [
        *shape, border, float(fg[sel].mean()), float(on_outline.mean() > 0) * float(
            (on_outline > 0).mean()), scene, *core_shape, float(core.sum()) / area,
        (float(li.mean()) - mu_r) / sd_r, (float(li.mean()) - mu_r) / 100.0, d[1] / 50.0,
        d[2] / 50.0, chroma / 50.0, chroma / (chroma + abs(float(d[0])) + 1.0),
        (float(s_in.mean()) - float(s_r.mean())) / 255.0, hue_shift,
        np.log((float(li.std()) + 1.0) / sd_r), np.log((float(grad[body].mean()) + 1.0) / grad_r),
        np.log((float(lap[body].mean()) + 1.0) / (float(lap[ring].mean()) + 1.0)),
        np.log((float(grad[edge].mean()) + 1.0) / grad_r),
        float((li < mu_r - 2 * sd_r).mean()), float((li > mu_r + 2 * sd_r).mean()),
        (p05 - mu_r) / sd_r, (p95 - mu_r) / sd_r,
        np.log(ab_in / ab_r), centre_rim, planes.texture,
    ]  # fmt: skip
    return np.nan_to_num(np.asarray(out, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
