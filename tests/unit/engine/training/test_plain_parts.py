"""Plain parts for the default describer's drawn defects: seeded, a part on a background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.defects.foreground import foreground_mask
from engine.training.plain_parts import plain_part

pytestmark = pytest.mark.unit


def test_plain_parts_are_seeded_parts_on_a_background() -> None:
    a = [plain_part(np.random.default_rng(3), 128) for _ in range(2)]
    assert np.array_equal(a[0], a[1]) and a[0].shape == (128, 128, 3) and a[0].dtype == np.uint8
    rng = np.random.default_rng(0)
    for _ in range(8):
        fg = foreground_mask(plain_part(rng, 128))
        assert 0.05 < fg.mean() < 0.95  # an object on a background, not a full-frame texture


def test_clean_parts_are_flat_and_the_default_keeps_the_draws_before_the_option() -> None:
    """clean_share 1: every part evenly lit with no marks and under half a grey level of
    noise (flat inside, away from the blurred edge); 0 (the default): the same parts as a
    caller that never heard of the option (no extra draw)."""
    from engine.training.plain_parts import CLEAN_SHARE

    assert 0 < CLEAN_SHARE < 1
    rng = np.random.default_rng(2)
    for _ in range(6):
        img = plain_part(rng, 128, clean_share=1.0)
        fg = cv2.erode(foreground_mask(img), np.ones((9, 9), np.uint8)) > 0
        assert fg.any() and img[fg].astype(float).std(axis=0).max() < 1.0
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert np.array_equal(plain_part(a, 96), plain_part(b, 96, clean_share=0.0))
    assert a.random() == b.random()
