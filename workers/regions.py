"""Anomaly map -> defect regions in frame coordinates.

engine.regions (connected regions, DBSCAN, descriptions) does the real work
once it exists; until then a connected-components fallback keeps the worker's
output the same shape.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from pipeline.storage.records import RegionRecord

log = logging.getLogger(__name__)


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO-style RLE (column-major run lengths, starting with zeros)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]]))) if flat.size \
        else np.array([0])
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _fallback_regions(anomaly_map: np.ndarray, threshold: float, min_area: int) -> list:
    mask = (anomaly_map > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        region = labels == i
        values = anomaly_map[region]
        out.append(RegionRecord(index=len(out), mask_rle=_rle(region), bbox=(x, y, w, h),
                                area=area, peak_score=float(values.max()),
                                mean_score=float(values.mean())))
    return out


def find_regions(anomaly_map: np.ndarray, threshold: float, min_area: int) -> list[RegionRecord]:
    """Regions above threshold in frame coordinates, largest first as the engine orders them."""
    try:
        from engine.regions import extract_regions
    except ImportError:
        return _fallback_regions(anomaly_map, threshold, min_area)
    regions = extract_regions(anomaly_map, threshold, min_area)
    return [RegionRecord(index=i, mask_rle=r.mask_rle, bbox=tuple(int(v) for v in r.bbox),
                         area=int(r.area), peak_score=float(r.peak_score),
                         mean_score=float(r.mean_score),
                         description=getattr(r, "description", None),
                         confidence=getattr(r, "confidence", None))
            for i, r in enumerate(regions)]
