"""Worker pieces without services: batching, offsets, decode, DLQ records, scoring, reload."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.frames import (
    H_REJECT_REASON,
    H_SOURCE,
    FrameRejectedError,
    RejectReason,
    make_envelope,
)
from workers.streaming.batching import collect_batch, next_offsets
from workers.streaming.decode import DecodedFrame, decode_all, decode_frame, jpeg_reduction
from workers.streaming.delivery import Retrier, dlq_message
from workers.streaming.reload import ModelWatcher
from workers.streaming.verdicts import infer_product, to_verdicts

pytestmark = pytest.mark.unit


def _record(offset: int, partition: int = 0, value: bytes = b"v") -> ConsumerRecord:
    return ConsumerRecord("frames", partition, -1, offset, 0, 0, b"cam", value,
                          [("a", b"1")], None, 3, len(value), 5)


class FakeConsumer:
    def __init__(self, polls: list[list[ConsumerRecord]]) -> None:
        self.polls = polls

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        records = self.polls.pop(0)[:max_records] if self.polls else []
        return {TopicPartition("frames", 0): records} if records else {}


def test_batch_fills_up_to_batch_size_across_polls() -> None:
    consumer = FakeConsumer([[_record(0), _record(1)], [_record(2), _record(3), _record(4)]])
    batch = collect_batch(consumer, batch_size=4, max_wait_ms=10_000)
    assert [r.offset for r in batch] == [0, 1, 2, 3]


def test_batch_returns_what_it_has_when_the_wait_ends() -> None:
    consumer = FakeConsumer([[_record(0)]])
    assert [r.offset for r in collect_batch(consumer, batch_size=8, max_wait_ms=0)] == [0]
    assert collect_batch(FakeConsumer([]), batch_size=8, max_wait_ms=0, idle_poll_ms=0) == []


def score_product(engine, items, *, chunk: int, min_area: int,  # noqa: ANN001, ANN201
                  pool: ThreadPoolExecutor | None = None):
    """What the worker does to one product's frames, in one call: infer_product on the
    consumer thread, then to_verdicts on the delivery thread."""
    outputs, failed = infer_product(engine, items, chunk=chunk)
    return to_verdicts(engine, outputs, min_area=min_area, pool=pool), failed


def test_offsets_to_commit_are_last_plus_one_per_partition() -> None:
    offsets = next_offsets([_record(5, 0), _record(7, 0), _record(6, 0), _record(2, 1)])
    assert {tp.partition: om.offset for tp, om in offsets.items()} == {0: 8, 1: 3}


def _png(w: int = 40, h: int = 30) -> bytes:
    return cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes()


def test_decode_resizes_for_the_model_and_reports_bad_frames() -> None:
    good = make_envelope(_png(), camera_id="c", line_id="l", product="p")
    bad = good.model_copy(update={"image": _png()[:30]})
    lying = good.model_copy(update={"image": _png(20, 20)})
    with ThreadPoolExecutor(2) as pool:
        out = decode_all(pool, [(good, 16), (bad, 16), (lying, 16)])
    assert isinstance(out[0], DecodedFrame)
    assert out[0].model_input.shape == (16, 16, 3)
    assert isinstance(out[1], FrameRejectedError) and out[1].reason is RejectReason.UNDECODABLE
    assert isinstance(out[2], FrameRejectedError) and out[2].reason is RejectReason.SIZE_MISMATCH


def test_reduction_keeps_both_sides_at_least_the_model_input() -> None:
    assert jpeg_reduction(900, 900, 320)[0] == 2
    assert jpeg_reduction(2600, 1300, 320)[0] == 4
    assert jpeg_reduction(5200, 2600, 320)[0] == 8
    assert jpeg_reduction(639, 2000, 320)[0] == 1  # 639 / 2 < 320: full decode


def test_jpeg_decoded_at_reduced_size_matches_full_decode_and_checks_size() -> None:
    rng = np.random.default_rng(0)
    # A smooth image with an edge, as a camera frame (noise would not survive JPEG alike).
    img = cv2.GaussianBlur(rng.integers(0, 255, (901, 1203, 3), dtype=np.uint8), (0, 0), 6)
    img[300:500, 400:800] = (30, 200, 90)  # BGR, as OpenCV encodes it
    jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    env = make_envelope(jpeg, camera_id="c", line_id="l", product="p")
    assert (env.header.width, env.header.height) == (1203, 901)
    out = decode_frame(env, 320)  # 1/2 scale: 602 x 451
    full = cv2.resize(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                      (320, 320), interpolation=cv2.INTER_AREA)[..., ::-1]
    diff = np.abs(out.model_input.astype(int) - full.astype(int))
    assert out.model_input.shape == (320, 320, 3)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6
    assert out.model_input[400 * 320 // 901, 600 * 320 // 1203].tolist() == \
        pytest.approx((90, 200, 30), abs=6)  # RGB order, inside the block
    wrong = env.model_copy(update={"header": env.header.model_copy(update={"width": 1100})})
    with pytest.raises(FrameRejectedError, match="at 1/2 scale") as info:
        decode_frame(wrong, 320)
    assert info.value.reason is RejectReason.SIZE_MISMATCH


def test_dlq_record_keeps_original_headers_and_says_why() -> None:
    msg = dlq_message(_record(9, 2), FrameRejectedError(RejectReason.UNDECODABLE, "bad bytes"))
    headers = dict(msg["headers"])
    assert headers["a"] == b"1"
    assert headers[H_REJECT_REASON] == b"undecodable"
    assert headers[H_SOURCE] == b"frames/2/9"
    assert msg["key"] == b"cam" and msg["value"] == b"v"


class BrokenOnBright:
    input_size, threshold, version = 8, 0.5, "t-1"

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if (frames > 200).any():
            raise RuntimeError("poison")
        maps = frames.mean(axis=-1) / 255.0
        return maps.reshape(len(frames), -1).max(axis=1), maps


def _decoded(value: int) -> tuple[ConsumerRecord, DecodedFrame]:
    img = np.full((12, 10, 3), value, np.uint8)
    env = make_envelope(cv2.imencode(".png", img)[1].tobytes(), camera_id="c", line_id="l",
                        product="p")
    return _record(value), DecodedFrame(env, np.full((8, 8, 3), value, np.uint8))


def test_one_poisonous_frame_is_isolated_and_the_rest_scored() -> None:
    items = [_decoded(10), _decoded(250), _decoded(140)]
    verdicts, failed = score_product(BrokenOnBright(), items, chunk=8, min_area=1)
    assert [v.kafka_offset for v in verdicts] == [10, 140]
    assert [v.label for v in verdicts] == ["normal", "anomalous"]
    assert verdicts[1].heatmap.width == 10 and verdicts[1].heatmap.height == 12
    assert [(r.offset, e.reason) for r, e in failed] == [(250, RejectReason.INFERENCE_FAILED)]


def test_retrier_retries_until_success_and_gives_up_only_when_stopped() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    stop = threading.Event()
    assert Retrier(stop, max_backoff_s=0.01).call("db", flaky, (ConnectionError,)) == (True, "ok")
    stop.set()

    def always_down() -> None:
        raise ConnectionError("down")
    assert Retrier(stop, max_backoff_s=0.01).call("db", always_down, (ConnectionError,)) \
        == (False, None)


class FakeSession:
    def __init__(self, rows: dict) -> None:
        self.rows = rows

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *_a: object) -> None:
        pass


def test_model_watcher_swaps_engines_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {"bottle": SimpleNamespace(version="v2", path="/m/bottle/v2")}
    monkeypatch.setattr("workers.streaming.reload.active_versions",
                        lambda session: dict(session.rows))
    loaded = []

    def loader(path: str, product: str) -> SimpleNamespace:
        loaded.append((path, product))
        return SimpleNamespace(version="v2")

    now = [0.0]
    watcher = ModelWatcher(lambda: FakeSession(rows), loader, interval_s=10, clock=lambda: now[0])
    old = {"bottle": SimpleNamespace(version="v1"), "cable": SimpleNamespace(version="c1")}
    worker = SimpleNamespace(engines=old)
    watcher(worker)
    assert worker.engines is not old and worker.engines["bottle"].version == "v2"
    assert worker.engines["cable"] is old["cable"]
    assert loaded == [("/m/bottle/v2", "bottle")]
    watcher(worker)  # within the interval: no DB check, nothing reloaded
    now[0] = 11.0
    watcher(worker)  # same version already served: no reload
    assert loaded == [("/m/bottle/v2", "bottle")]


def test_heatmaps_and_regions_are_kept_at_a_bounded_size_in_frame_coordinates() -> None:
    img = np.full((900, 1200, 3), 10, np.uint8)
    img[450:600, 600:900] = 200  # a bright block: one region of 150 x 300 frame pixels
    env = make_envelope(cv2.imencode(".png", img)[1].tobytes(), camera_id="c", line_id="l",
                        product="p")
    small = cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA)
    frame = DecodedFrame(env, small)
    with ThreadPoolExecutor(2) as pool:
        verdicts, failed = score_product(BrokenOnBright(), [(_record(1), frame)], chunk=8,
                                         min_area=64, pool=pool)
    assert not failed
    heat = verdicts[0].heatmap
    assert (heat.width, heat.height) == (160, 120)  # long side 160, the frame's aspect
    (region,) = verdicts[0].regions
    assert region.mask_rle["size"] == [120, 160]
    x, y, w, h = region.bbox  # frame pixels, give or take the 8 px map's blur
    assert 400 <= x <= 700 and 300 <= y <= 500 and x + w <= 1200 and y + h <= 900
    assert region.area > 64


def test_a_model_without_a_describer_serves_with_a_warning(tmp_path, caplog) -> None:  # noqa: ANN001
    from workers.streaming.scoring import load_region_describer

    runtime = SimpleNamespace(encoder=SimpleNamespace(channels=(112,)))
    with caplog.at_level("WARNING"):
        assert load_region_describer(tmp_path, runtime) is None
    assert "no descriptions" in caplog.text


def test_consumer_lag_is_high_watermark_minus_position_per_partition() -> None:
    from workers.streaming.metrics import WorkerMetrics
    from workers.streaming.worker import InferenceWorker

    tps = [TopicPartition("frames", 0), TopicPartition("frames", 3), TopicPartition("frames", 5)]
    consumer = SimpleNamespace(assignment=lambda: set(tps),
                               highwater=lambda tp: None if tp.partition == 5 else 100,
                               position=lambda tp: 40 if tp.partition == 0 else 100)
    worker = SimpleNamespace(consumer=consumer, metrics=WorkerMetrics())
    InferenceWorker._record_lag(worker)  # type: ignore[arg-type]
    value = worker.metrics.registry.get_sample_value
    assert value("clad_consumer_lag", {"partition": "0"}) == 60
    assert value("clad_consumer_lag", {"partition": "3"}) == 0
    assert value("clad_consumer_lag", {"partition": "5"}) is None  # not fetched yet: no guess


class HotSpotBelowThreshold:
    """A map with a hot spot above the pixel threshold but an image score below it."""

    input_size, threshold, version = 8, 0.5, "t-1"

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = np.zeros((len(frames), 8, 8), np.float32)
        maps[:, 2:6, 2:6] = 0.9
        return np.full(len(frames), 0.4, np.float32), maps


def test_normal_verdicts_carry_no_regions_anomalous_ones_do() -> None:
    items = [_decoded(10), _decoded(20)]
    normal, _ = score_product(HotSpotBelowThreshold(), items, chunk=8, min_area=1)
    assert [v.label for v in normal] == ["normal", "normal"]
    assert all(v.regions == () for v in normal)
    assert all(v.heatmap is not None for v in normal)  # the map is still kept

    class Anomalous(HotSpotBelowThreshold):
        def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scores, maps = super().infer(frames)
            return scores + 0.5, maps

    flagged, _ = score_product(Anomalous(), items, chunk=8, min_area=1)
    assert [v.label for v in flagged] == ["anomalous", "anomalous"]
    assert all(len(v.regions) == 1 for v in flagged)
