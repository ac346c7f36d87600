from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.heatmap_codec import decode_heatmap, encode_heatmap, render_overlay

pytestmark = pytest.mark.unit


def test_16bit_png_round_trip_within_one_quantisation_step() -> None:
    rng = np.random.default_rng(0)
    amap = rng.uniform(0, 3.7, (40, 56)).astype(np.float32)
    png, max_value = encode_heatmap(amap)
    back = decode_heatmap(png, max_value)
    assert back.shape == amap.shape
    assert max_value == pytest.approx(float(amap.max()))
    assert np.abs(back - amap).max() <= max_value / 65535


def test_all_zero_map_survives() -> None:
    png, max_value = encode_heatmap(np.zeros((8, 8), np.float32))
    assert max_value == 0.0
    assert not decode_heatmap(png, max_value).any()


def test_overlay_is_the_frame_with_the_hot_spot_coloured_and_outlined() -> None:
    frame = np.full((64, 64, 3), 100, np.uint8)
    amap = np.zeros((32, 32), np.float32)
    amap[20:28, 20:28] = 2.0  # upsampled to frame size inside
    png = render_overlay(frame, amap, threshold=1.0, boxes=[(40, 40, 16, 16)], labels=["x"])
    out = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    assert out.shape == frame.shape
    hot, cold = out[48, 48], out[5, 5]
    assert hot[0] > cold[0] + 50, "above-threshold pixels are red-ish"
    assert tuple(out[40, 50]) == (255, 255, 0), "region box drawn in yellow"
