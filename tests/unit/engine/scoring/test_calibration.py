"""Thresholds: max-F1 against a brute force, false-alarm quantile, the switch between them."""

from __future__ import annotations

import numpy as np
import pytest

from engine.scoring.calibration import (
    Threshold,
    calibrate,
    far_threshold,
    max_f1_threshold,
    pixel_threshold,
)

pytestmark = pytest.mark.unit


def _f1_at(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    pred = scores >= t
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def test_max_f1_hand_case() -> None:
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1])
    t, f1 = max_f1_threshold(scores, labels)
    # cut at 0.35: tp=3, fp=1 -> F1 = 6/7 ; cut at 0.8: tp=2, fn=1 -> 0.8
    assert t == pytest.approx(0.35) and f1 == pytest.approx(6 / 7)


@pytest.mark.parametrize("seed", range(5))
def test_max_f1_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    labels = rng.integers(0, 2, size=40)
    t, f1 = max_f1_threshold(scores, labels)
    brute = max(_f1_at(scores, labels, c) for c in np.unique(scores))
    assert f1 == pytest.approx(brute) and _f1_at(scores, labels, t) == pytest.approx(brute)


def test_far_threshold_quantile() -> None:
    normals = np.arange(200, dtype=float)  # 0..199
    t = far_threshold(normals, 0.01)  # 2 normals may lie at or above
    assert (normals >= t).sum() == 2
    few = far_threshold(np.array([0.2, 0.5]), 0.01)
    assert few > 0.5 and few == pytest.approx(0.5)


def test_calibrate_switches_on_labels_and_round_trips() -> None:
    normal_only = calibrate(np.array([0.1, 0.2, 0.3]))
    assert normal_only.method == "false_alarm_rate" and normal_only.false_alarm_rate == 0.0
    labelled = calibrate(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1]))
    assert labelled.method == "max_f1" and labelled.f1 == pytest.approx(1.0)
    assert Threshold.from_dict(labelled.to_dict()) == labelled


def test_pixel_threshold_is_the_false_alarm_rule_on_map_peaks() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.random((16, 16)) * (1 + i / 100) for i in range(200)]
    t = pixel_threshold(maps, 0.01)
    peaks = np.array([m.max() for m in maps])
    assert (peaks >= t).sum() == 2  # 1% of 200 normal frames would show a region
    few = pixel_threshold([np.array([[0.1, 0.4]]), np.array([[0.3, 0.2]])], 0.01)
    assert few > 0.4 and few == pytest.approx(0.4)  # just above every normal pixel
    with pytest.raises(ValueError, match="normal map"):
        pixel_threshold([])


def test_calibrate_derives_the_region_threshold_from_the_same_normals() -> None:
    maps = [np.full((4, 4), 1.0), np.full((4, 4), 1.2)]
    normal_only = calibrate(np.array([0.9, 1.1]), normal_maps=maps)
    assert normal_only.value == pytest.approx(1.1) and normal_only.pixel == pytest.approx(1.2)
    labelled = calibrate(np.array([0.9, 1.1, 3.0]), np.array([0, 0, 1]), normal_maps=maps)
    assert labelled.method == "max_f1" and labelled.pixel == pytest.approx(1.2)
    assert Threshold.from_dict(labelled.to_dict()) == labelled
    assert calibrate(np.array([0.9, 1.1])).pixel is None


def test_threshold_saved_before_the_region_threshold_still_reads() -> None:
    old = {"value": 1.5, "method": "false_alarm_rate", "n_normal": 4, "n_anomalous": 0,
           "f1": None, "false_alarm_rate": 0.0}
    assert Threshold.from_dict(old).pixel is None
