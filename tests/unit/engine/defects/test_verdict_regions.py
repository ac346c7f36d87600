"""The one region rule (engine.defects.regions.verdict_regions): normal -> no region, anomalous ->
the regions above the region threshold, else the hottest area around the map's maximum."""

from __future__ import annotations

import numpy as np
import pytest

from engine.defects import rle
from engine.defects.regions import hottest_region, verdict_regions

pytestmark = pytest.mark.unit


def _bump(shape: tuple[int, int], centre: tuple[int, int], sigma: float,
          height: float) -> np.ndarray:  # fmt: skip
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return (height * np.exp(-d2 / (2 * sigma**2))).astype(np.float32)


def _two_bumps() -> np.ndarray:
    """Background 1.0, a bump peaking at 2.0 at (30, 40) and a lower one (1.6) at (90, 100)."""
    return 1.0 + _bump((128, 128), (30, 40), 6.0, 1.0) + _bump((128, 128), (90, 100), 6.0, 0.6)


def test_normal_verdict_has_no_region_even_with_a_hot_spot() -> None:
    amap = _two_bumps()
    assert verdict_regions(amap, anomalous=False, threshold=1.5, min_area=4) == []
    assert verdict_regions(amap, anomalous=False, threshold=99.0, min_area=4) == []


def test_anomalous_verdict_gets_the_regions_above_the_threshold() -> None:
    regions = verdict_regions(_two_bumps(), anomalous=True, threshold=1.3, min_area=4)
    assert len(regions) == 2 and not any(r.fallback for r in regions)
    assert regions[0].peak_score == pytest.approx(2.0, abs=1e-3)  # largest first
    assert all(r.peak_score > 1.3 for r in regions)


def test_nothing_above_the_threshold_gives_the_hottest_area_flagged() -> None:
    amap = _two_bumps()
    regions = verdict_regions(amap, anomalous=True, threshold=2.5, min_area=4)
    assert len(regions) == 1
    (r,) = regions
    assert r.fallback and r.index == 0
    assert r.mask[30, 40] and not r.mask[90, 100]  # around the maximum, not the other bump
    # half-way from the median (1.0) to the peak (2.0): exp(-d2 / 72) >= 0.5, a disc of
    # radius sqrt(72 ln 2) ~ 7.06 px -> 157 pixels on the grid
    assert r.area == int((_bump((128, 128), (30, 40), 6.0, 1.0) >= 0.5).sum())
    assert 140 <= r.area <= 170
    assert r.bbox == (33, 23, 15, 15)
    assert r.peak_score == pytest.approx(2.0, abs=1e-3)
    assert np.array_equal(rle.decode(r.mask_rle), r.mask)


def test_a_cut_smaller_than_min_area_falls_back_too() -> None:
    amap = _two_bumps()
    # only a few pixels at the very top of the first bump pass 1.99: fewer than min_area
    assert (amap > 1.99).sum() < 50
    regions = verdict_regions(amap, anomalous=True, threshold=1.99, min_area=50)
    assert len(regions) == 1 and regions[0].fallback and regions[0].mask[30, 40]


def test_flat_map_falls_back_to_the_whole_frame() -> None:
    r = hottest_region(np.full((20, 30), 0.7, np.float32))
    assert r.fallback and r.area == 600 and r.bbox == (0, 0, 30, 20)


def test_hottest_region_rejects_bad_maps() -> None:
    with pytest.raises(ValueError, match="2-D"):
        hottest_region(np.zeros((2, 2, 2), np.float32))
