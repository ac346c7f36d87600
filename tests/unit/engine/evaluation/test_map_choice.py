"""The pixel map chosen from a product's labelled defects (engine.evaluation.map_choice)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from engine.evaluation.map_choice import (
    apply_choice,
    choose_pixel_map,
    current_map,
    decide,
    reference_maps,
)
from engine.evaluation.metrics import auroc
from engine.scoring.builder import ScoringConfig
from engine.scoring.runtime_model import CladRuntime

pytestmark = pytest.mark.unit
SIZE = 64


def _defects(n: int, seed: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Noise frames with a dark disc each, and its mask."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        centre = (int(rng.integers(16, 48)), int(rng.integers(16, 48)))
        cv2.circle(img, centre, 9, (10, 10, 10), -1)
        cv2.circle(mask, centre, 9, 1, -1)
        images.append(img)
        masks.append(mask)
    return images, masks


def test_pooled_map_only_on_a_clear_gain() -> None:
    assert decide(90.0, 91.0, 4).map == "pooled"  # +1 = the margin
    assert decide(90.0, 90.9, 4).map == "fine"
    assert decide(90.0, 85.0, 4).map == "fine"
    assert decide(90.0, 99.0, 4, margin=10.0).map == "fine"
    few = decide(50.0, 99.0, 2)
    assert few.map == "fine" and "needs 3" in few.reason
    assert decide(math.nan, math.nan, 5).map == "fine"


def test_the_map_in_use_stays_unless_the_other_clearly_wins() -> None:
    assert decide(90.5, 90.0, 4, current="pooled").map == "pooled"
    assert decide(91.0, 90.0, 4, current="pooled").map == "fine"
    assert decide(99.0, 50.0, 2, current="pooled").map == "pooled"  # too few frames
    assert current_map(ScoringConfig(pool=3, pixel_pool=None)) == "pooled"
    assert current_map(ScoringConfig(pool=3, pixel_pool=3)) == "pooled"
    assert current_map(ScoringConfig(pool=3, pixel_pool=1)) == "fine"


def test_choice_measures_both_maps_on_the_labelled_frames(runtime: CladRuntime) -> None:
    images, masks = _defects(4)
    choice = choose_pixel_map(runtime, images, masks, side=32)
    fine, pooled = reference_maps(runtime, images, side=32)
    truth = np.stack([cv2.resize(m, (32, 32), interpolation=cv2.INTER_NEAREST) for m in masks])
    assert choice.frames == 4
    assert choice.fine_auroc == pytest.approx(100 * auroc(truth > 0, fine))
    assert choice.pooled_auroc == pytest.approx(100 * auroc(truth > 0, pooled))
    assert not np.allclose(fine, pooled)  # two different maps were compared
    assert choice.map == decide(choice.fine_auroc, choice.pooled_auroc, 4).map


def test_frames_without_a_mask_do_not_count(runtime: CladRuntime) -> None:
    images, masks = _defects(3)
    empty = np.zeros((SIZE, SIZE), np.uint8)
    choice = choose_pixel_map(runtime, images, [masks[0], None, empty])
    assert choice.map == "fine" and choice.frames == 1 and choice.fine_auroc is not None
    assert math.isnan(choice.fine_auroc)  # not measured: too few frames
    assert choice.as_dict()["fine_auroc"] is None  # stored as JSON null, not NaN


def test_pooled_choice_makes_one_map_and_leaves_the_original(runtime: CladRuntime) -> None:
    cfg = ScoringConfig(input_size=SIZE, aug_shifts=())
    choice = decide(80.0, 95.0, 5)
    one_map, stored = apply_choice(runtime, cfg, choice)
    assert stored.pixel_pool is None and cfg.pixel_pool == 1
    assert runtime.split_maps and not one_map.split_maps
    frames = torch.from_numpy(np.stack(_defects(2)[0]))
    with torch.no_grad():
        feats = runtime.encoder.forward_features(runtime.preprocess(frames))
        pooled = runtime.finish(feats, runtime.visual_map(feats), None, SIZE, SIZE)
        got = one_map(frames)
        own = runtime(frames)
    torch.testing.assert_close(got.maps, pooled.maps)  # its pixel map is the image map
    torch.testing.assert_close(got.scores, own.scores)  # the image score is untouched
    assert not torch.allclose(own.maps, got.maps)
    same, same_cfg = apply_choice(runtime, cfg, decide(95.0, 80.0, 5))
    assert same is runtime and same_cfg is cfg


def test_a_one_map_model_reports_it(runtime: CladRuntime) -> None:
    cfg = ScoringConfig(input_size=SIZE, aug_shifts=())
    one_map, _ = apply_choice(runtime, cfg, decide(80.0, 95.0, 5))
    images, masks = _defects(4)
    assert choose_pixel_map(one_map, images, masks).map == "pooled"
