"""Relative scores and the grouping of alike regions, on numbers worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.relative_score import format_relative, relative_score
from pipeline.storage.region_groups import Pool, comparable


def test_relative_score_is_the_score_over_its_threshold() -> None:
    assert relative_score(6.609, 2.02) == pytest.approx(3.2718, abs=1e-4)
    assert relative_score(0.5, 0.5) == 1.0
    assert relative_score(1.0, 0.0) is None and relative_score(1.0, -1.0) is None
    assert format_relative(28.0, 20.0) == "1.40x" and format_relative(1.0, 0.0) == "-"


@given(st.floats(0, 1e6), st.floats(1e-6, 1e6))
def test_relative_score_orders_like_the_raw_score_within_a_threshold(score: float,
                                                                    threshold: float) -> None:
    value = relative_score(score, threshold)
    assert value is not None and (value >= 1.0) == (score >= threshold * (1 - 1e-12)) or \
        abs(score - threshold) <= 1e-9 * threshold


def test_unit_norm_embeddings_are_compared_as_they_are() -> None:
    x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(comparable(x), x, atol=1e-6)


def test_feature_vectors_are_z_scored_so_no_feature_dominates() -> None:
    # Feature 0 in the hundreds and the same for all; features 1 and 2 tell them apart.
    x = np.array([[500.0, 1.0, 2.0], [500.0, 1.1, 2.1], [500.0, -1.0, -2.0],
                  [500.0, -1.1, -2.1]])
    raw = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert float(raw[0] @ raw[2]) > 0.99  # raw cosine: everything alike
    z = comparable(x)
    assert float(z[0] @ z[1]) > 0.9 and float(z[0] @ z[2]) < 0.0
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)


def test_pool_lists_the_alike_most_alike_first_without_the_region_itself() -> None:
    vectors = comparable(np.array([[1.0, 0.0], [0.99, 0.14], [0.95, 0.31], [0.0, 1.0]]))
    pool = Pool(np.array([10, 11, 12, 13]), np.array([1, 1, 2, 3]), vectors)
    found = pool.similar(10, min_similarity=0.9)
    assert [(r, v) for r, v, _ in found] == [(11, 1), (12, 2)]
    assert found[0][2] > found[1][2] >= 0.9
    assert pool.similar(10, 0.9, limit=1)[0][0] == 11
    assert pool.similar(99, 0.0) == []
