"""The refine step: the pixels inside a map region that stand out from the surface."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from engine.defects.describer_artifacts import (
    CONFIG,
    load_forest_describer,
    save_forest_describer,
)
from engine.defects.kind_forest import from_sklearn
from engine.defects.refine import MAX_SHARE, refine_region
from engine.defects.region_features import FEATURE_NAMES, N_FEATURES, features_of, frame_planes
from engine.defects.shape_describer import ShapeDescriber, pixel_input

pytestmark = pytest.mark.unit


def _plate(seed: int = 0, noise: float = 6.0) -> np.ndarray:
    """A grey textured surface filling the frame."""
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, noise, (256, 256, 3)), 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_a_thin_dark_line_inside_a_big_blob_gives_a_thin_mask() -> None:
    img = _plate()
    line = np.zeros((256, 256), np.uint8)
    cv2.line(line, (80, 110), (170, 135), 1, 3)
    img[line > 0] = 40
    blob = cv2.dilate(line, np.ones((41, 41), np.uint8))  # a map region ~10x the line
    assert blob.sum() > 8 * line.sum()
    out = refine_region(frame_planes(img), blob)
    assert out.shape == (256, 256) and out.dtype == np.uint8
    assert not (out & (1 - blob)).any()  # never outside the region
    assert _iou(out > 0, line > 0) > 0.85
    assert out.sum() < 1.3 * line.sum()
    # as thin as the line: no pixel lies deeper inside the mask than the line's centre
    depth = cv2.distanceTransform(out, cv2.DIST_L2, 3).max()
    assert depth <= cv2.distanceTransform(line, cv2.DIST_L2, 3).max() + 1e-6 < 3


def test_a_blob_on_plain_surface_with_nothing_standing_out_falls_back_to_the_blob() -> None:
    blob = np.zeros((256, 256), np.uint8)
    cv2.circle(blob, (128, 128), 30, 1, -1)
    for seed in range(4):
        out = refine_region(frame_planes(_plate(seed)), blob)
        assert np.array_equal(out, blob)
    # nor on a rougher texture, whose lone outliers seed nothing that holds together
    out = refine_region(frame_planes(_plate(9, noise=14.0)), blob)
    assert np.array_equal(out, blob)


def test_a_region_that_is_all_defect_is_kept_whole() -> None:
    """An exact mask (clad describe --mask) of a dark spot: nearly all of it stands out,
    so it is already the defect's mask and is described as given."""
    img = _plate()
    spot = np.zeros((256, 256), np.uint8)
    cv2.circle(spot, (100, 140), 14, 1, -1)
    img[spot > 0] = 50
    out = refine_region(frame_planes(img), spot)
    assert np.array_equal(out, spot)
    assert (out.sum() / spot.sum()) > MAX_SHARE


def test_a_brown_spot_on_a_part_is_found_inside_its_blob() -> None:
    """The demo's stain: a flat brown disc on a grey washer, its map blob ~3x wider."""
    img = np.full((256, 256, 3), 60, np.uint8)
    cv2.circle(img, (128, 128), 96, (170, 175, 180), -1, cv2.LINE_AA)
    spot = np.zeros((256, 256), np.uint8)
    cv2.circle(spot, (100, 80), 9, 1, -1)
    img[spot > 0] = (90, 60, 40)
    blob = cv2.dilate(spot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    out = refine_region(frame_planes(img), blob)
    assert _iou(out > 0, spot > 0) > 0.85


def test_the_mask_is_brought_to_the_work_size() -> None:
    """A worker's region comes at the map's size (160 px here): the refined mask is at WORK."""
    img = _plate()
    line = np.zeros((256, 256), np.uint8)
    cv2.line(line, (60, 60), (180, 90), 1, 4)
    img[line > 0] = 30
    small = cv2.resize(cv2.dilate(line, np.ones((31, 31), np.uint8)), (160, 160),
                       interpolation=cv2.INTER_NEAREST)  # fmt: skip
    out = refine_region(frame_planes(img), small)
    assert out.shape == (256, 256)
    assert _iou(out > 0, line > 0) > 0.8


def _forest_describer(refine: bool) -> ShapeDescriber:
    x = np.random.default_rng(0).normal(size=(100, N_FEATURES))
    rf = RandomForestClassifier(5, random_state=0).fit(x, (x[:, 0] > 0).astype(int))
    return ShapeDescriber(from_sklearn(rf, 2), [0, 1], refine=refine)


def test_a_describer_trained_on_refined_regions_describes_the_refined_mask() -> None:
    img = _plate()
    line = np.zeros((256, 256), np.uint8)
    cv2.line(line, (80, 110), (170, 135), 1, 3)
    img[line > 0] = 40
    blob = cv2.dilate(line, np.ones((41, 41), np.uint8))
    planes = frame_planes(img)
    masks = torch.from_numpy(blob[None].astype(bool))
    with_refine = _forest_describer(True).region_embeddings(pixel_input(img[None]), masks)
    without = _forest_describer(False).region_embeddings(pixel_input(img[None]), masks)
    assert np.array_equal(with_refine[0].numpy(), features_of(planes, refine_region(planes, blob)))
    assert np.array_equal(without[0].numpy(), features_of(planes, blob))
    assert not np.array_equal(with_refine.numpy(), without.numpy())


def test_the_refine_flag_is_saved_with_the_describer_and_read_back(tmp_path: Path) -> None:
    for refine in (True, False):
        d = _forest_describer(refine)
        out = save_forest_describer(tmp_path / str(refine), d.forest, list(FEATURE_NAMES),
                                    {"unclear_below": 0.5}, refine=refine)  # fmt: skip
        meta = json.loads((out / CONFIG).read_text())
        # absent when false: a describer saved before the step reads as it did
        assert ("refine" in meta["features"]) is refine
        assert load_forest_describer(out).describer.refine is refine


def test_the_enclosed_share_is_saved_with_the_describer_and_read_back(tmp_path: Path) -> None:
    """A describer trained with the enclosed-spot option computes its features so; the key
    is written only when set, so older describers read as before."""
    from engine.defects.region_features import ENCLOSED_SHARE

    for share in (ENCLOSED_SHARE, 0.0):
        d = _forest_describer(False)
        out = save_forest_describer(tmp_path / str(share), d.forest, list(FEATURE_NAMES),
                                    {"unclear_below": 0.5}, enclosed_share=share)  # fmt: skip
        meta = json.loads((out / "describer.json").read_text())
        assert ("enclosed_share" in meta["features"]) is (share > 0)
        assert load_forest_describer(out).describer.enclosed_share == share
    img = np.full((256, 256, 3), 60, np.uint8)
    cv2.circle(img, (128, 128), 96, (170, 175, 180), -1)
    cv2.circle(img, (128, 60), 10, (84, 62, 44), -1)  # near the background's colour
    spot = np.zeros((1, 256, 256), bool)
    spot[0, 45:76, 113:144] = True
    d = _forest_describer(False)
    d.enclosed_share = ENCLOSED_SHARE
    got = d.region_embeddings(pixel_input(img[None]), torch.from_numpy(spot)).numpy()
    assert np.array_equal(got[0], features_of(frame_planes(img, ENCLOSED_SHARE), spot[0]))
    assert not np.array_equal(got[0], features_of(frame_planes(img), spot[0]))
