"""Anomaly map -> defect regions as storage records (engine.regions does the work)."""

from __future__ import annotations

import numpy as np

from engine.regions import extract_regions
from pipeline.storage.records import RegionRecord


def find_regions(anomaly_map: np.ndarray, threshold: float, min_area: int) -> list[RegionRecord]:
    """Regions above threshold in frame coordinates, largest first as the engine orders them."""
    regions = extract_regions(anomaly_map, threshold, min_area)
    # Descriptions are added per batch afterwards (workers.descriptions, cache first).
    return [RegionRecord(index=i, mask_rle=r.mask_rle, bbox=tuple(int(v) for v in r.bbox),
                         area=int(r.area), peak_score=float(r.peak_score),
                         mean_score=float(r.mean_score))
            for i, r in enumerate(regions)]
