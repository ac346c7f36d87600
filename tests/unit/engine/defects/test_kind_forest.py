"""The forest the default describer ships: plain arrays that answer as sklearn does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from engine.defects.kind_forest import KindForest, from_sklearn

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
