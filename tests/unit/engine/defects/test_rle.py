"""RLE round trips and the COCO (column-major, zeros first) layout."""

from __future__ import annotations

import numpy as np
import pytest

from engine.defects import rle

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < 0.3
    enc = rle.encode(mask)
    assert np.array_equal(rle.decode(enc), mask)
    assert rle.area(enc) == int(mask.sum())


def test_column_major_and_leading_zero_run() -> None:
    mask = np.array([[1, 0], [1, 1]], dtype=bool)  # column-major: 1, 1, 0, 1
    assert rle.encode(mask) == {"size": [2, 2], "counts": [0, 2, 1, 1]}
    assert rle.encode(np.zeros((2, 3), bool))["counts"] == [6]
    assert rle.encode(np.ones((2, 3), bool))["counts"] == [0, 6]


def test_decode_rejects_wrong_total() -> None:
    with pytest.raises(ValueError):
        rle.decode({"size": [2, 2], "counts": [1, 1]})
