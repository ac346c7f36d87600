"""Metrics against scikit-learn and hand-computed cases."""

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score

from engine.evaluation.metrics import aupro, auroc, f1_max

pytestmark = pytest.mark.unit


def test_auroc_hand_cases() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    # one tie between a positive and a negative counts one half: (1 + 1 + 0.5 + 1) / 4
    assert auroc([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.4]) == pytest.approx(0.875)
    assert np.isnan(auroc([1, 1], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounding makes many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 2)
    p, r, _ = precision_recall_curve(y, s)
    expected = np.max(2 * p * r / np.maximum(p + r, 1e-12))
    assert f1_max(y, s) == pytest.approx(expected, abs=1e-12)


def test_f1_max_hand_case() -> None:
    # t=0.8: P=1, R=.5 -> .667; t=0.5: .5; t=0.4: P=2/3, R=1 -> 0.8; t=0.1: .667
    assert f1_max([0, 0, 1, 1], [0.1, 0.5, 0.4, 0.8]) == pytest.approx(0.8)


def test_aupro_perfect_and_worst() -> None:
    masks = np.zeros((2, 20, 20), np.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 10:18, 10:12] = 1
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-3)
    assert aupro(masks, 1.0 - masks) == pytest.approx(0.0, abs=1e-3)


def test_aupro_counts_regions_not_pixels() -> None:
    # a big region found and a small one missed: PRO = 0.5 at FPR 0, although 96% of
    # the defect pixels are found; the single step to FPR 1 is interpolated linearly
    # (PRO = 0.5 + 0.5 FPR), so the normalised area to 0.3 is (0.5 + 0.65) / 2 = 0.575
    masks = np.zeros((1, 40, 40), np.uint8)
    masks[0, 0:20, 0:20] = 1  # 400 px
    masks[0, 30:34, 30:34] = 1  # 16 px
    maps = np.zeros((1, 40, 40))
    maps[0, 0:20, 0:20] = 1.0
    assert aupro(masks, maps) == pytest.approx(0.575, abs=1e-3)


def test_aupro_random_scores_near_chance() -> None:
    # random maps: PRO(fpr) ~ fpr, so the normalised area to 0.3 is ~0.15
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 64, 64), np.uint8)
    masks[:, 10:30, 10:30] = 1
    assert aupro(masks, rng.random(masks.shape)) == pytest.approx(0.15, abs=0.02)
