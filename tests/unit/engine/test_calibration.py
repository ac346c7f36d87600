"""Thresholds: max-F1 against a brute force, false-alarm quantile, the switch between them."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calibration import Threshold, calibrate, far_threshold, max_f1_threshold

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
