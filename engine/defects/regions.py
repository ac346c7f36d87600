"""Anomaly map -> individual defect regions (individual-anomalies paper, eq. 4).

The thresholded map is split with DBSCAN over the anomalous pixels, run on the
pixel grid rather than on a point list so it costs O(H·W) whatever the defect
size (a 1-Mpx frame with a large defect would otherwise be 10^5 points):
  - core pixel: at least `min_samples` anomalous pixels (itself included) within
    `eps` — and, so a thin crack is never "noise", every pixel of a connected
    component of at least `min_area` pixels;
  - core pixels closer than ~`eps` are linked (discs of radius eps/2 that touch);
  - border pixel: anomalous, not core, within `eps` of a core pixel -> that
    core's cluster; anything else is noise and dropped.
So scattered pixels close together become one region, two separate blobs stay
two, and isolated specks vanish. Regions smaller than `min_area` are dropped.

`verdict_regions` is the one rule every path applies (worker, `clad describe`,
demo): a normal verdict has no region; an anomalous one has the regions above the
calibrated region threshold or, when that cut leaves none, the hottest connected
area around the map's maximum, flagged `fallback` (low confidence: the frame is
anomalous as a whole, but no pixel stands out as clearly as the calibration asks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from engine.defects import rle


@dataclass(frozen=True)
class Region:
    """One defect region in map (frame) coordinates; masks are RLE, see engine.defects.rle."""

    index: int  # 0 = largest region of the frame
    mask_rle: dict[str, Any]  # uncompressed COCO RLE, column-major (engine.defects.rle)
    bbox: tuple[int, int, int, int]  # x, y, width, height
    area: int
    peak_score: float
    mean_score: float
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool [H, W]
    # True: no pixel passed the region threshold; this is the hottest area around the
    # map's maximum, shown so an anomalous verdict always says where (low confidence)
    fallback: bool = False


def default_eps(shape: tuple[int, ...]) -> float:
    """1% of the longer side (>= 2 px): a few pixels at 256-320 px, ~10 px on 1 Mpx."""
    return max(2.0, 0.01 * max(shape[:2]))


def _disc(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= radius * radius + 1e-6).astype(np.uint8)


def cluster_pixels(
    binary: np.ndarray, min_area: int, eps: float, min_samples: int
) -> tuple[np.ndarray, int]:
    """Grid DBSCAN: int32 labels [H, W] (0 = background or noise) and the cluster count."""
    binary = binary.astype(bool)
    if not binary.any():
        return np.zeros(binary.shape, np.int32), 0
    b8 = binary.astype(np.uint8)
    density = cv2.filter2D(b8.astype(np.float32), -1, _disc(eps).astype(np.float32),
                           borderType=cv2.BORDER_CONSTANT)  # fmt: skip
    core = binary & (density >= min_samples - 0.5)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(b8, connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)
    big = big[big > 0]
    if big.size:
        core |= np.isin(comp, big)
    if not core.any():
        return np.zeros(binary.shape, np.int32), 0
    linked = cv2.dilate(core.astype(np.uint8), _disc(eps / 2.0))
    n_clusters, link_labels = cv2.connectedComponents(linked, connectivity=8)
    labels = np.where(core, link_labels, 0).astype(np.int32)
    border = binary & ~core
    if border.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
        reach = border & (dist <= eps)
        labels[reach] = labels[iy[reach], ix[reach]]
    return labels, int(n_clusters - 1)


def split_mask(
    mask: np.ndarray, min_area: int = 1, eps: float | None = None, min_samples: int = 4
) -> list[np.ndarray]:
    """A (ground-truth) binary mask -> one bool mask per individual region, largest first."""
    labels, n = cluster_pixels(mask > 0, min_area, eps or default_eps(mask.shape), min_samples)
    masks = [labels == k for k in range(1, n + 1)]
    masks = [m for m in masks if int(m.sum()) >= min_area]
    return sorted(masks, key=lambda m: -int(m.sum()))


def extract_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    min_area: int,
    *,
    eps: float | None = None,
    min_samples: int = 4,
) -> list[Region]:
    """Regions where `anomaly_map > threshold`, largest first, each with its RLE mask.

    `eps` (pixels) defaults to `default_eps(map.shape)`; `min_samples` is DBSCAN's
    density (pixels within eps, the pixel included) for a scattered pixel to count.
    """
    amap = _as_map(anomaly_map)
    masks = split_mask(amap > threshold, max(1, int(min_area)),
                       eps if eps is not None else default_eps(amap.shape), min_samples)
    return [_region(i, m, amap) for i, m in enumerate(masks)]


def hottest_region(anomaly_map: np.ndarray, level: float = 0.5) -> Region:
    """The connected area around the map's maximum that is at least `level` of the way
    from the map's median (its background) up to that maximum; flagged `fallback`.

    Half-way up the peak (a full-width-at-half-maximum cut) follows the hot spot's own
    extent whatever the map's scale; a flat map gives the whole frame.
    """
    amap = _as_map(anomaly_map)
    if not np.isfinite(amap).any():
        raise ValueError("the anomaly map has no finite value")
    peak_at = np.unravel_index(int(np.argmax(amap)), amap.shape)
    peak, background = float(amap[peak_at]), float(np.median(amap[np.isfinite(amap)]))
    hot = (amap >= background + level * (peak - background)).astype(np.uint8)
    _n, labels = cv2.connectedComponents(hot, connectivity=8)
    return _region(0, labels == labels[peak_at], amap, fallback=True)


def verdict_regions(
    anomaly_map: np.ndarray, *, anomalous: bool, threshold: float, min_area: int
) -> list[Region]:
    """Regions of one verdict: none when normal; when anomalous, those above the region
    `threshold` or, if that cut finds none, `hottest_region` (so never an empty list)."""
    if not anomalous:
        return []
    return extract_regions(anomaly_map, threshold, min_area) or [hottest_region(anomaly_map)]


def _as_map(anomaly_map: np.ndarray) -> np.ndarray:
    amap = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32), nan=-np.inf)
    if amap.ndim != 2:
        raise ValueError(f"expected a 2-D anomaly map, got shape {amap.shape}")
    return amap


def _region(index: int, m: np.ndarray, amap: np.ndarray, fallback: bool = False) -> Region:
    ys, xs = np.nonzero(m)
    x0, y0 = int(xs.min()), int(ys.min())
    values = amap[m]
    return Region(
        index=index, mask_rle=rle.encode(m),
        bbox=(x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1),
        area=int(m.sum()), peak_score=float(values.max()), mean_score=float(values.mean()),
        mask=m, fallback=fallback,
    )  # fmt: skip


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
