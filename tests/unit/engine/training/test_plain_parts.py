"""Plain parts for the default describer's drawn defects: seeded, a part on a background."""

from __future__ import annotations

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
