"""Region features: the shape and photometry numbers the default describer reads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.defects.region_features import FEATURE_NAMES, N_FEATURES, region_features

pytestmark = pytest.mark.unit


def _plate(seed: int = 0) -> np.ndarray:
    """A grey textured surface filling the frame."""
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, 6, (256, 256, 3)), 0, 255).astype(np.uint8)


def _f(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    x = region_features(image, mask)
    assert x.shape == (N_FEATURES,) and np.isfinite(x).all()
    return dict(zip(FEATURE_NAMES, x.tolist(), strict=True))


def test_a_line_is_thin_and_elongated_a_disc_is_round() -> None:
    img = _plate()
    line, disc = np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.uint8)
    cv2.line(line, (40, 60), (200, 90), 1, 2)
    cv2.circle(disc, (128, 128), 20, 1, -1)
    fl, fd = _f(img, line), _f(img, disc)
    assert fl["elongation"] < 0.1 < 0.9 < fd["elongation"]
    assert fl["thickness"] < fd["thickness"]
    assert fl["circularity"] < 0.3 < 0.8 < fd["circularity"]
    assert fl["straightness"] > 0.9 and fl["skeleton_length"] > 0.5
    assert fd["solidity"] > 0.95


def test_darker_and_tinted_regions_read_as_such() -> None:
    disc = np.zeros((256, 256), np.uint8)
    cv2.circle(disc, (128, 128), 25, 1, -1)
    dark, tint = _plate(), _plate()
    dark[disc > 0] = (dark[disc > 0] * 0.4).astype(np.uint8)
    tint[disc > 0] = np.clip(tint[disc > 0] * np.array([1.3, 1.0, 0.6]), 0, 255).astype(np.uint8)
    fdk, ftn = _f(dark, disc), _f(tint, disc)
    assert fdk["dL_z"] < -3 and fdk["dark_share"] > 0.9
    assert ftn["chroma_shift"] > 5 * max(fdk["chroma_shift"], 0.01)
    assert ftn["chroma_share"] > fdk["chroma_share"]


def test_the_core_of_a_blob_around_a_line_is_the_line() -> None:
    """An anomaly map's region is a blob around the defect; the core finds the line."""
    img = _plate()
    line = np.zeros((256, 256), np.uint8)
    cv2.line(line, (60, 100), (180, 130), 1, 2)
    img[line > 0] = 30
    grown = cv2.dilate(line, np.ones((17, 17), np.uint8))
    f = _f(img, grown)
    assert f["thickness"] > 0.05  # the blob itself is thick
    assert f["core_thickness"] < 0.02 and f["core_elongation"] < 0.1
    assert f["core_share"] < 0.3


def test_any_resolution_and_an_empty_mask() -> None:
    img = cv2.resize(_plate(), (512, 384))
    mask = np.zeros((384, 512), bool)
    mask[100:140, 200:260] = True
    assert _f(img, mask)["log_area_share"] == pytest.approx(np.log(40 * 60 / (384 * 512)), abs=0.1)
    assert not region_features(img, np.zeros((384, 512), bool)).any()


def _zhang_suen_reference(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning pixel by pixel, as the 1984 paper states it."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            drop = []
            for y in range(1, img.shape[0] - 1):
                for x in range(1, img.shape[1] - 1):
                    if img[y, x] != 1:
                        continue
                    p = [img[y - 1, x], img[y - 1, x + 1], img[y, x + 1], img[y + 1, x + 1],
                         img[y + 1, x], img[y + 1, x - 1], img[y, x - 1], img[y - 1, x - 1]]
                    a = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
                    if step == 0:
                        c1, c2 = p[0] * p[2] * p[4], p[2] * p[4] * p[6]
                    else:
                        c1, c2 = p[0] * p[2] * p[6], p[0] * p[4] * p[6]
                    if 2 <= sum(p) <= 6 and a == 1 and c1 == 0 and c2 == 0:
                        drop.append((y, x))
            for y, x in drop:
                img[y, x] = 0
            changed |= bool(drop)
        if not changed:
            return img[1:-1, 1:-1]


def test_thinning_matches_zhang_suen_pixel_by_pixel() -> None:
    from engine.defects.region_features import _thin

    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(3, 40, 2))
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                        (int(rng.integers(1, 15)), int(rng.integers(1, 6))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)  # fmt: skip
        if trial % 3 == 0:  # ragged masks, where the sub-iteration order matters most
            mask |= (rng.random((h, w)) < 0.3).astype(np.uint8)
        np.testing.assert_array_equal(_thin(mask), _zhang_suen_reference(mask))


def _washer() -> tuple[np.ndarray, np.ndarray]:
    """A flat grey part on a dark background, and its own mask."""
    rng = np.random.default_rng(0)
    img = np.clip(60 + rng.normal(0, 2, (256, 256, 3)), 0, 255).astype(np.uint8)
    part = np.zeros((256, 256), np.uint8)
    cv2.circle(part, (128, 128), 96, 1, -1)
    img[part > 0] = np.clip(175 + rng.normal(0, 2, (int(part.sum()), 3)), 0, 255)
    return img, part


def test_a_blob_spilling_over_the_part_edge_is_compared_on_the_part() -> None:
    """The ring and the region's pixels stay on the part's surface: a map's blob that
    spills over the edge onto the background does not read as a dark region."""
    img, part = _washer()
    spill = np.zeros((256, 256), np.uint8)
    cv2.circle(spill, (128, 40), 16, 1, -1)  # a blob on the edge, mostly on the part
    assert 0.75 < part[spill > 0].mean() < 1
    f = _f(img, spill)
    # normal surface: no shift, no dark tail (compared with a ring that reaches the
    # background, the background in the blob made dL_z 0.40 and p05_z -1.08)
    assert abs(f["dL_z"]) < 0.2 and f["p05_z"] > -0.6 and f["dark_share"] < 0.05


def test_a_spot_as_dark_as_the_background_inside_the_part_still_counts() -> None:
    img, _part = _washer()
    spot, blob = np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.uint8)
    cv2.circle(spot, (128, 60), 9, 1, -1)
    img[spot > 0] = (90, 60, 40)  # brown, within the cut of the background's colour
    cv2.circle(blob, (128, 60), 20, 1, -1)  # the map's blob around it
    f = _f(img, blob)
    assert f["dL_z"] < -1 and f["chroma_shift"] > 0.03 and f["core_share"] > 0.1
