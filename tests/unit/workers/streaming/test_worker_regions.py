"""The worker's verdicts follow the one region rule: normal -> none, anomalous -> at least
one region, cut at the engine's calibrated region threshold or the flagged hottest area."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.frames import make_envelope
from workers.streaming.decode import DecodedFrame
from workers.streaming.scoring import region_threshold_of
from workers.streaming.verdicts import infer_product, to_verdicts

pytestmark = pytest.mark.unit


def _item(value: int) -> tuple[ConsumerRecord, DecodedFrame]:
    img = np.full((64, 80, 3), value, np.uint8)  # frame 80 x 64: the map keeps that size
    env = make_envelope(cv2.imencode(".png", img)[1].tobytes(), camera_id="c", line_id="l",
                        product="p")
    record = ConsumerRecord("frames", 0, -1, value, 0, 0, b"c", b"v", [], None, 1, 1, 1)
    return record, DecodedFrame(env, np.full((16, 16, 3), value, np.uint8))


class HotSpot:
    """16 x 16 map, background 0.2, a plateau of 0.9 on rows 4-7, cols 8-11; score =
    the frame's brightness / 100, so value 40 is normal and 90 anomalous at 0.5."""

    input_size, threshold, version = 16, 0.5, "t-1"

    def __init__(self, pixel_threshold: float) -> None:
        self.pixel_threshold = pixel_threshold

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = np.full((len(frames), 16, 16), 0.2, np.float32)
        maps[:, 4:8, 8:12] = 0.9
        return frames.reshape(len(frames), -1).mean(axis=1) / 100.0, maps


def _verdicts(engine: object, values: list[int]) -> list:  # noqa: ANN401
    outputs, failed = infer_product(engine, [_item(v) for v in values], chunk=8)
    assert failed == []
    return to_verdicts(engine, outputs, min_area=1)


def test_regions_are_cut_at_the_region_threshold_not_the_image_one() -> None:
    # 0.9 passes a region threshold of 0.8 (and the image threshold 0.5): a cut region
    normal, anomalous = _verdicts(HotSpot(pixel_threshold=0.8), [40, 90])
    assert normal.label == "normal" and normal.regions == ()
    assert anomalous.label == "anomalous" and len(anomalous.regions) == 1
    (r,) = anomalous.regions
    assert not r.fallback
    # map cols 8-11 / rows 4-7 of 16 -> frame (80 x 64) x 40-59, y 16-31; the map is
    # resized bilinearly, so the cut at 0.8 sits a little inside the plateau's edge
    x, y, w, h = r.bbox
    assert x >= 40 and x + w <= 60 and y >= 16 and y + h <= 32 and w * h >= 0.5 * 20 * 16
    assert r.peak_score == pytest.approx(0.9)


def test_anomalous_frame_with_nothing_above_the_region_threshold_gets_the_hottest_area() -> None:
    normal, anomalous = _verdicts(HotSpot(pixel_threshold=1.5), [40, 90])
    assert normal.regions == ()  # normal: still nothing, fallback or not
    assert len(anomalous.regions) == 1
    (r,) = anomalous.regions
    assert r.fallback and r.peak_score == pytest.approx(0.9)
    # half-way from the background (0.2) to the peak: the plateau, not the whole frame
    assert r.bbox == (40, 16, 20, 16)


def test_an_engine_without_a_region_threshold_cuts_at_its_image_threshold() -> None:
    class Plain:
        input_size, threshold, version = 16, 0.5, "t-1"
        infer = HotSpot.infer

    assert region_threshold_of(Plain()) == 0.5
    assert region_threshold_of(HotSpot(pixel_threshold=0.8)) == 0.8
    (anomalous,) = _verdicts(Plain(), [90])
    assert [r.fallback for r in anomalous.regions] == [False]
