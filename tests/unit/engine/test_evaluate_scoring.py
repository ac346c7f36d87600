"""MVTec-layout reader and the k-shot evaluation on a tiny synthetic category."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.builder import ScoringConfig
from engine.datasets import find_categories, split_category
from engine.evaluate import evaluate_category

pytestmark = pytest.mark.unit


def _stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:96, :96][1]
    return (128 + 60 * np.sin(xx / 3.0) + rng.normal(0, 4, (96, 96))).clip(0, 255).astype(np.uint8)


@pytest.fixture()
def category(tmp_path: Path) -> Path:
    cat = tmp_path / "data" / "stripes"
    (cat / "test" / "good").mkdir(parents=True)
    (cat / "test" / "blob").mkdir()
    (cat / "ground_truth" / "blob").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(cat / "test" / "good" / f"{i:03d}.png"), _stripes(i))
    for i in range(3):
        img, mask = _stripes(10 + i), np.zeros((96, 96), np.uint8)
        cv2.circle(img, (30 + 15 * i, 50), 8, 0, -1)
        cv2.circle(mask, (30 + 15 * i, 50), 8, 255, -1)
        cv2.imwrite(str(cat / "test" / "blob" / f"{i:03d}.png"), img)
        cv2.imwrite(str(cat / "ground_truth" / "blob" / f"{i:03d}_mask.png"), mask)
    return cat


def test_protocol_without_train_folder(category: Path) -> None:
    split = split_category(category, 1)
    assert split.references == [category / "test" / "good" / "000.png"]
    assert split.reference_source == "test/good"
    assert len(split.evaluated) == 6  # 3 good left + 3 anomalous
    assert all(s.mask_path is not None for s in split.evaluated if s.label == 1)
    assert find_categories(category.parent) == [category] == find_categories(category)


def test_protocol_with_train_folder(category: Path) -> None:
    (category / "train" / "good").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(category / "train" / "good" / f"{i:03d}.png"), _stripes(20 + i))
    split = split_category(category, 2)
    assert split.reference_source == "train/good" and len(split.references) == 2
    assert len(split.evaluated) == 7  # nothing of test/ is held out
    with pytest.raises(ValueError, match="shots"):
        split_category(category, 4)


def test_evaluate_category_detects_blobs(category: Path) -> None:
    cfg = ScoringConfig(input_size=96, aug_shifts=(), sigma=2.0)
    res = evaluate_category(category, 1, cfg)
    assert (res.n_references, res.n_evaluated, res.n_anomalous) == (1, 6, 3)
    assert res.image_auroc == 100.0
    assert res.pixel_auroc > 90.0
