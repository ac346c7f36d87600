"""Facts of an unnamed region, each checked on a drawn region whose answer is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.defects.region_facts import RegionFacts, facts_text, region_facts

pytestmark = pytest.mark.unit

GREY = 128


def _canvas(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((size, size), np.uint8), np.full((size, size, 3), GREY, np.uint8)


def test_a_dark_vertical_line_at_the_left_edge() -> None:
    mask, image = _canvas()
    mask[40:102, 2:4] = 1
    image[mask > 0] = 40
    facts = region_facts(mask > 0, image)
    assert facts.shape == "thin line"
    assert facts.length_px == pytest.approx(62, abs=1)
    assert facts.width_px == pytest.approx(2, abs=0.5)
    assert facts.contrast == "dark"
    assert facts.place == "at the left edge"
    assert facts_text(facts) == "unnamed: a dark thin line, 62 px long, at the left edge"


def test_a_diagonal_line_is_measured_along_itself() -> None:
    mask, image = _canvas()
    cv2.line(mask, (30, 30), (110, 110), 1, 2)
    facts = region_facts(mask > 0, image)
    assert facts.shape == "thin line"
    assert facts.length_px == pytest.approx(80 * 2**0.5, rel=0.06)
    assert facts.contrast is None  # same grey inside and around


def test_a_curved_crack_is_a_line_as_long_as_its_curve() -> None:
    mask, _image = _canvas()
    cv2.ellipse(mask, (80, 60), (50, 50), 0, 0, 180, 1, 2)  # half circle, radius 50
    facts = region_facts(mask > 0, None)
    assert facts.shape == "thin line"
    assert facts.length_px == pytest.approx(np.pi * 50, rel=0.1)
    assert facts.contrast is None  # no image: nothing said about contrast


def test_a_small_bright_round_spot_inside_the_upper_right() -> None:
    mask, image = _canvas()
    cv2.circle(mask, (120, 35), 6, 1, -1)
    image[mask > 0] = 230
    facts = region_facts(mask > 0, image)
    assert facts.shape == "spot"
    assert facts.length_px == pytest.approx(13, abs=1.5)
    assert facts.contrast == "bright"
    assert facts.place == "inside, towards the top right"


def test_a_large_patch_in_the_middle_with_only_its_colour_changed() -> None:
    mask, image = _canvas()
    mask[50:110, 45:115] = 1
    # same lightness, another hue: a reddish and a greenish grey of equal L
    image[:] = (120, 135, 120)
    image[mask > 0] = (150, 119, 120)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(int)
    assert abs(lab[80, 80, 0] - lab[5, 5, 0]) < 6  # the drawing really keeps the lightness
    facts = region_facts(mask > 0, image)
    assert facts.shape == "patch"
    assert (facts.length_px, facts.width_px) == pytest.approx((70, 60), abs=1)
    assert facts.contrast == "discoloured"
    assert facts.place == "inside, in the middle"


def test_sizes_are_in_frame_pixels_and_millimetres() -> None:
    mask, image = _canvas()
    mask[80, 20:70] = 1  # 50 mask px long, one thick
    image[mask > 0] = 20
    # the stored mask is 160 px; the camera's frame 800 px: 5 frame px per mask px
    facts = region_facts(mask > 0, image, frame_size=(800, 800))
    assert facts.length_px == pytest.approx(250, abs=5)
    assert facts_text(facts, mm_per_px=0.02) == \
        "unnamed: a dark thin line, 250 px (5.0 mm) long, inside, towards the left"


def test_the_image_may_be_at_another_size_than_the_mask() -> None:
    mask, _ = _canvas()
    mask[100:110, 100:110] = 1
    image = np.full((320, 320, 3), GREY, np.uint8)
    image[200:220, 200:220] = 30  # the same square at twice the size
    assert region_facts(mask > 0, image).contrast == "dark"


@pytest.mark.parametrize(("box", "place"), [
    ((0, 0, 20, 20), "in the top left corner"),
    ((140, 60, 160, 80), "at the right edge"),
    ((60, 145, 80, 160), "at the bottom edge"),
    ((0, 70, 160, 80), "across the frame"),
    ((60, 20, 80, 40), "inside, towards the top"),
    ((10, 120, 30, 140), "inside, towards the bottom left"),
])  # fmt: skip
def test_where_a_region_lies(box: tuple[int, int, int, int], place: str) -> None:
    mask, image = _canvas()
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    assert region_facts(mask > 0, image).place == place


def test_an_empty_mask_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty mask"):
        region_facts(np.zeros((10, 10), bool), None)


def test_the_words_of_each_shape() -> None:
    spot = RegionFacts("spot", 12.4, 11.0, 100.0, None, "at the top edge")
    patch = RegionFacts("patch", 70.0, 60.0, 4200.0, "discoloured", "inside, in the middle")
    assert facts_text(spot) == "unnamed: a spot, 12 px across, at the top edge"
    assert facts_text(patch, 0.5) == ("unnamed: a discoloured patch, 70 by 60 px "
                                      "(35.0 by 30.0 mm), inside, in the middle")
