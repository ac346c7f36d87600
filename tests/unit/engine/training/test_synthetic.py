"""Synthetic anomalies: every kind changes pixels inside its mask only, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.synthetic import KINDS, augment_normal, foreground_mask, synthesize

pytestmark = pytest.mark.unit


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((128, 128, 3), 20, np.uint8)  # dark background
    img[24:104, 24:104] = rng.integers(100, 200, size=(80, 80, 3))  # textured object
    return img


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_pixels_inside_mask_only(kind: str) -> None:
    img = _image()
    out, mask, k = synthesize(img, np.random.default_rng(1), donors=[_image(5)], kind=kind)  # type: ignore[arg-type]
    assert k == kind and out.shape == img.shape and out.dtype == np.uint8
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert mask.sum() > 10
    changed = np.abs(out.astype(int) - img.astype(int)).max(axis=-1) > 0
    assert changed.sum() > 0
    assert not changed[mask == 0].any()


def test_seeded_is_reproducible() -> None:
    a = synthesize(_image(), np.random.default_rng(3))
    b = synthesize(_image(), np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_defects_land_on_the_object() -> None:
    img = _image()
    fg = foreground_mask(img)
    assert fg[64, 64] == 1 and fg[2, 2] == 0
    for seed in range(10):
        _, mask, _ = synthesize(img, np.random.default_rng(seed), kind="blob")
        ys, xs = np.nonzero(mask)
        cy, cx = int(np.median(ys)), int(np.median(xs))
        assert 10 <= cy <= 118 and 10 <= cx <= 118


def test_augment_normal_keeps_shape() -> None:
    out = augment_normal(_image(), np.random.default_rng(0))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
