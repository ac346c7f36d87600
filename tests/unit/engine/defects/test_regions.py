"""Region splitting on synthetic maps: blobs, noise, DBSCAN grouping of scattered pixels."""

from __future__ import annotations

import numpy as np
import pytest

from engine.defects import rle
from engine.defects.regions import Region, cluster_pixels, extract_regions, split_mask

pytestmark = pytest.mark.unit


def _blobs() -> np.ndarray:
    amap = np.zeros((128, 128), np.float32)
    amap[10:30, 10:30] = 0.8
    amap[15, 15] = 1.0
    amap[80:100, 60:110] = 0.9
    return amap


def test_two_blobs_give_two_regions_largest_first() -> None:
    regions = extract_regions(_blobs(), threshold=0.5, min_area=10)
    assert [r.area for r in regions] == [1000, 400]
    big, small = regions
    assert big.bbox == (60, 80, 50, 20) and small.bbox == (10, 10, 20, 20)
    assert small.peak_score == pytest.approx(1.0)
    assert small.mean_score == pytest.approx((399 * 0.8 + 1.0) / 400)
    assert [r.index for r in regions] == [0, 1]
    assert np.array_equal(rle.decode(small.mask_rle), small.mask)


def test_scattered_noise_is_dropped() -> None:
    rng = np.random.default_rng(0)
    amap = (rng.random((256, 256)) < 0.002).astype(np.float32)  # isolated specks
    assert extract_regions(amap, 0.5, min_area=10) == []


def test_nearby_scattered_pixels_group_into_one_region() -> None:
    rng = np.random.default_rng(1)
    amap = np.zeros((200, 200), np.float32)
    patch = rng.random((30, 30)) < 0.3  # a dotted stain: no two dots need to touch
    amap[50:80, 50:80] = patch
    amap[150:180, 120:150] = rng.random((30, 30)) < 0.3
    regions = extract_regions(amap, 0.5, min_area=20)
    assert len(regions) == 2
    # one region per dotted patch, holding most of its dots (DBSCAN drops stray border dots)
    assert {r.bbox[:2] for r in regions} <= {(50, 50), (51, 50), (50, 51), (51, 51),
                                             (120, 150), (121, 150), (120, 151), (121, 151)}
    assert regions[0].area + regions[1].area >= 0.8 * int((amap > 0.5).sum())


def test_thin_crack_is_kept_whole() -> None:
    amap = np.zeros((100, 100), np.float32)
    amap[50, 5:95] = 1.0  # one pixel wide: sparse for DBSCAN, yet a connected defect
    regions = extract_regions(amap, 0.5, min_area=20)
    assert len(regions) == 1 and regions[0].area == 90


def test_matches_sklearn_dbscan_cluster_count() -> None:
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(3)
    binary = np.zeros((96, 96), bool)
    for cy, cx in ((20, 20), (70, 30), (40, 75)):
        ys = np.clip(rng.normal(cy, 3, 60).round().astype(int), 0, 95)
        xs = np.clip(rng.normal(cx, 3, 60).round().astype(int), 0, 95)
        binary[ys, xs] = True
    binary |= rng.random(binary.shape) < 0.001
    _, n = cluster_pixels(binary, min_area=10_000, eps=3.0, min_samples=4)
    pts = np.argwhere(binary)
    ref = sklearn_cluster.DBSCAN(eps=3.0, min_samples=4).fit(pts).labels_
    assert n == len(set(ref) - {-1}) == 3


def test_split_mask_and_region_equality_ignores_the_array() -> None:
    masks = split_mask(_blobs() > 0.5, min_area=5)
    assert len(masks) == 2 and masks[0].sum() == 1000
    a = Region(0, {"size": [1, 1], "counts": [1]}, (0, 0, 1, 1), 1, 1.0, 1.0, np.ones((1, 1)))
    b = Region(0, {"size": [1, 1], "counts": [1]}, (0, 0, 1, 1), 1, 1.0, 1.0, None)
    assert a == b


def test_empty_and_bad_maps() -> None:
    assert extract_regions(np.zeros((10, 10), np.float32), 0.5, 1) == []
    with pytest.raises(ValueError):
        extract_regions(np.zeros((2, 2, 2), np.float32), 0.5, 1)
