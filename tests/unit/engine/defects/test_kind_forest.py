"""The forest the default describer ships: plain arrays that answer as sklearn does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from engine.defects.kind_forest import LEAF, KindForest, from_sklearn

pytestmark = pytest.mark.unit


def test_the_stored_forest_answers_as_sklearn_and_survives_a_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.where(x[:, 0] > 0.5, 3, np.where(x[:, 1] > 0, 1, 0))  # kind 2 never seen
    rf = RandomForestClassifier(20, min_samples_leaf=3, random_state=0).fit(x, y)
    forest = from_sklearn(rf, n_kinds=5)
    test = rng.normal(size=(200, 5)).astype(np.float32)
    ours = forest.predict_proba(test)
    theirs = np.zeros((200, 5))
    theirs[:, rf.classes_] = rf.predict_proba(test)
    assert ours.shape == (200, 5) and np.allclose(ours.sum(axis=1), 1, atol=1e-5)
    assert np.abs(ours - theirs).max() < 0.01  # leaf shares stored in 1/255 steps
    assert (ours[:, [2, 4]] == 0).all()
    forest.save(tmp_path / "f.npz")
    again = KindForest.load(tmp_path / "f.npz")
    assert np.array_equal(again.predict_proba(test), ours)
    with pytest.raises(ValueError, match="features"):
        forest.predict_proba(test[:, :4])


def _tree_by_tree(forest: KindForest, x: np.ndarray) -> np.ndarray:
    """The forest walked one tree and one row at a time: what predict_proba computes."""
    total = np.zeros((len(x), forest.value.shape[1]), np.float64)
    for i, row in enumerate(x):
        for root in forest.roots:
            node = int(root)
            while forest.feature[node] != LEAF:
                left = row[forest.feature[node]] <= forest.threshold[node]
                node = int(forest.left[node] if left else forest.right[node])
            total[i] += forest.value[node]
    return (total / np.maximum(total.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


def test_the_shipped_forest_answers_as_its_trees_walked_one_by_one() -> None:
    from engine.defects.describer_artifacts import load_default_describer

    forest = load_default_describer().describer.forest
    rng = np.random.default_rng(0)
    # features around the split thresholds the trees use, so every branch is taken
    x = rng.normal(0, 1, (40, forest.n_features)).astype(np.float32)
    inner = forest.feature != LEAF
    x[:20, forest.feature[inner][:20]] = forest.threshold[inner][:20]  # exactly on a split
    for n in (1, 7, 40):
        np.testing.assert_array_equal(forest.predict_proba(x[:n]), _tree_by_tree(forest, x[:n]))
