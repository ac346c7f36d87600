"""Anomaly map -> defect regions as storage records (engine.defects.regions does the work)."""

from __future__ import annotations

import numpy as np

from engine.defects.regions import verdict_regions
from pipeline.storage.records import RegionRecord


def find_regions(anomaly_map: np.ndarray, *, anomalous: bool, threshold: float,
                 min_area: int) -> list[RegionRecord]:
    """A verdict's regions by engine.defects.regions.verdict_regions (none when normal, at least
    one when anomalous), largest first as the engine orders them; map coordinates."""
    regions = verdict_regions(anomaly_map, anomalous=anomalous, threshold=threshold,
                              min_area=min_area)
    # Descriptions are added per batch afterwards (workers.streaming.descriptions, cache first).
    return [RegionRecord(index=i, mask_rle=r.mask_rle, bbox=tuple(int(v) for v in r.bbox),
                         area=int(r.area), peak_score=float(r.peak_score),
                         mean_score=float(r.mean_score), fallback=r.fallback)
            for i, r in enumerate(regions)]
