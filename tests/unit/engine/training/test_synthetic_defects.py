"""Drawn defects of every generic kind: seeded, inside the image, marked by their mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.defects.defect_kinds import GENERIC_KINDS
from engine.training.synthetic import KINDS, VOCAB_KIND
from engine.training.synthetic_defects import DRAWINGS, draw_defect

pytestmark = pytest.mark.unit


def _image(seed: int = 0, background: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((128, 128, 3), 20, np.uint8)
    if background:
        img[24:104, 24:104] = rng.integers(100, 200, size=(80, 80, 3))
    else:
        img[:] = rng.integers(100, 200, size=(128, 128, 3))
    return img


def test_every_generic_kind_has_a_drawing_and_the_old_kinds_a_generic_kind() -> None:
    assert set(DRAWINGS) == set(GENERIC_KINDS)
    assert set(VOCAB_KIND) == set(KINDS) and set(VOCAB_KIND.values()) <= set(GENERIC_KINDS)


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("kind", GENERIC_KINDS)
def test_each_drawing_changes_the_image_where_its_mask_is(kind: str, background: bool) -> None:
    img = _image(background=background)
    for seed in range(4):
        out, mask = draw_defect(img, kind, np.random.default_rng(seed), donors=[_image(5)])
        assert out.shape == img.shape and out.dtype == np.uint8
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and mask.sum() >= 4
        changed = np.abs(out.astype(int) - img.astype(int)).max(axis=-1) > 3
        assert changed[mask > 0].mean() > 0.3, (kind, seed)
        # a soft edge may spill a little, never far from the region
        near = cv2.dilate(mask, np.ones((15, 15), np.uint8)) > 0
        assert not changed[~near].any(), (kind, seed)


def test_drawings_are_reproducible_and_unknown_kinds_refused() -> None:
    a = draw_defect(_image(), "crack", np.random.default_rng(3))
    b = draw_defect(_image(), "crack", np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="no drawing for defect kind 'wobble'"):
        draw_defect(_image(), "wobble", np.random.default_rng(0))


def test_dark_tinted_stains_darken_every_channel_and_the_default_keeps_the_old_draws() -> None:
    from engine.training.synthetic_defects import DARK_TINT, draw_stain

    assert 0 < DARK_TINT < 0.6
    img = np.full((128, 128, 3), 175, np.uint8)

    def dark(tint: float) -> int:  # stains darker than 80% of the surface in every channel
        n = 0
        for seed in range(30):
            out, mask = draw_stain(img, np.random.default_rng(seed), dark_tint=tint)
            n += bool((out[mask > 0].astype(float).mean(axis=0) < 140).all())
        return n

    assert dark(0.6) >= dark(0.0) + 8  # 60% of the stains dark and tinted
    for seed in range(4):  # dark_tint 0: the stains drawn before the option
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        out_a, m_a = draw_defect(img, "stain", a)
        out_b, m_b = draw_stain(img, b, dark_tint=0.0)
        assert np.array_equal(out_a, out_b) and np.array_equal(m_a, m_b)
        assert a.random() == b.random()


def test_faded_stains_lose_saturation_keep_the_texture_and_the_default_keeps_the_old_draws(
) -> None:  # fmt: skip
    from engine.training.synthetic_defects import FADED, draw_stain

    assert 0 < FADED < 0.6
    rng = np.random.default_rng(1)
    # a saturated brown surface with a grain of its own (leather-like)
    img = np.clip(np.array([150, 80, 40], np.float32) + rng.normal(0, 12, (128, 128, 1)),
                  0, 255).astype(np.uint8)  # fmt: skip
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
    grain = img.astype(float).mean(axis=-1)
    fine = grain - cv2.GaussianBlur(grain, (0, 0), 2.0)

    def greyer(share: float) -> int:  # stains that lost 30% of the surface's saturation
        n = 0
        for seed in range(20):
            out, mask = draw_stain(img, np.random.default_rng(seed), faded=share)
            inside = mask > 0
            s_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
            n += bool(s_out[inside].mean() < 0.7 * sat[inside].mean())
            # the grain shows through: the stain's fine detail is the surface's (the
            # patch's own soft gradient taken out by a blur)
            g_out = out.astype(float).mean(axis=-1)
            fine_out = g_out - cv2.GaussianBlur(g_out, (0, 0), 2.0)
            assert np.corrcoef(fine_out[inside], fine[inside])[0, 1] > 0.8, (share, seed)
        return n

    # 1.0: every stain not drawn plainly darker or lighter (60%) is faded
    assert greyer(1.0) >= greyer(0.0) + 8
    for seed in range(4):  # faded 0: the stains drawn before the option
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        out_a, m_a = draw_stain(img, a)
        out_b, m_b = draw_stain(img, b, faded=0.0)
        assert np.array_equal(out_a, out_b) and np.array_equal(m_a, m_b)
        assert a.random() == b.random()
