"""Batch region descriptions in the worker against real Redis: a hit skips the
describer, an outage still describes, one lookup and one write per batch."""

from __future__ import annotations

import dataclasses
import uuid

import cv2
import numpy as np
import pytest
import redis
import torch

import engine.defects.describer as describer_module
from engine.defects import rle
from engine.defects.defect_kinds import kind_group
from engine.defects.describer import RegionDescriber
from engine.defects.describer_artifacts import LoadedDescriber
from engine.defects.vocabulary import Vocabulary
from pipeline.frames import make_envelope
from pipeline.region_cache import RedisRegionCache
from pipeline.storage.records import RegionRecord, VerdictRecord
from tests.integration.describer_support import count_description_searches
from workers.streaming.decode import DecodedFrame
from workers.streaming.descriptions import describe_batch

pytestmark = pytest.mark.integration

VOCAB = Vocabulary("widget", "widget", {"crack": ["a crack", "a long crack"],
                                        "hole": ["a hole", "a small hole"]})


class DescribingEngine:
    input_size, threshold, version = 16, 0.5, "w-1"

    def __init__(self) -> None:
        torch.manual_seed(0)
        model = RegionDescriber(6, 10, torch.randn(4, 10), [0, 0, 1, 1], joint_dim=8,
                                hidden=16, grid=8)
        self.describer = LoadedDescriber(model, VOCAB, {}, {}, identity="d-widget-1")
        self.embedded = 0

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("not used here")

    def patch_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        # each frame's embedding from its own pixels, whatever else is in the batch
        self.embedded += len(frames)
        return torch.stack([torch.randn(6, 8, 8, generator=torch.Generator().manual_seed(
            int(f.sum()) % 1000)) for f in frames])  # fmt: skip


def _verdict(seed: int, boxes: list[tuple[int, int, int, int]]) -> tuple[VerdictRecord,
                                                                            DecodedFrame]:
    img = np.full((16, 16, 3), seed, np.uint8)
    env = make_envelope(cv2.imencode(".png", img)[1].tobytes(), camera_id="c", line_id="l",
                        product="widget")
    regions = []
    for i, (x, y, w, h) in enumerate(boxes):
        m = np.zeros((32, 32), bool)
        m[y:y + h, x:x + w] = True
        regions.append(RegionRecord(index=i, mask_rle=rle.encode(m), bbox=(x, y, w, h),
                                    area=w * h, peak_score=1.0, mean_score=0.9))
    h = env.header
    v = VerdictRecord(frame_id=h.frame_id, camera_id="c", line_id="l", product="widget",
                      captured_at=h.captured_at, width=16, height=16,
                      content_type="image/png", model_version="w-1", score=1.0,
                      threshold=0.5, label="anomalous", regions=tuple(regions))
    return v, DecodedFrame(env, img)


@pytest.fixture
def searched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Regions sent to the describer's vocabulary search, per call."""
    return count_description_searches(monkeypatch, describer_module)


def _batch() -> tuple[list[VerdictRecord], dict[uuid.UUID, DecodedFrame]]:
    pairs = [_verdict(10, [(2, 2, 6, 6), (20, 20, 10, 8)]), _verdict(50, [(4, 10, 12, 3)]),
             _verdict(90, [])]
    return [v for v, _f in pairs], {v.frame_id: f for v, f in pairs}


def test_miss_describes_and_stores_then_hit_skips_the_describer(
        redis_client: redis.Redis, searched: list[int]) -> None:
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = DescribingEngine()
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [3], "one vocabulary search for the whole batch's misses"
    assert first.computed == 3 and first.cached == 0
    regions = [r for v in first.verdicts for r in v.regions]
    assert all(r.description in {"a crack", "a long crack", "a hole", "a small hole"}
               for r in regions)
    assert all(0 < r.confidence <= 1 and r.runner_up is not None for r in regions)
    # the kind key beside the text, which describer answered, and the embedding it saw
    assert all(r.kind == ("crack" if "crack" in r.description else "hole") for r in regions)
    assert {r.describer for r in regions} == {"d-widget-1"}
    embeddings = [np.frombuffer(r.embedding, np.float32) for r in regions]
    assert all(e.shape == (8,) and abs(np.linalg.norm(e) - 1) < 1e-5 for e in embeddings)
    assert first.verdicts[2].regions == ()
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    assert len(redis_client.keys("clad:desc:*")) == 3
    second = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [3], "every region came from Redis: no new search"
    assert second.cached == 3 and second.computed == 0 and second.fresh == {}
    assert [r.description for v in second.verdicts for r in v.regions] == \
        [r.description for r in regions]
    assert [(r.kind, r.embedding) for v in second.verdicts for r in v.regions] == \
        [(r.kind, r.embedding) for r in regions], "a cache hit stores the same kind"
    assert engine.embedded == 4, "only frames with regions are embedded (2 per batch)"


def test_a_partial_hit_searches_only_the_new_regions_and_a_new_version_all(
        redis_client: redis.Redis, searched: list[int]) -> None:  # fmt: skip
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = DescribingEngine()
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts[1:], frames, cache)  # one region
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    assert searched == [1]
    assert 0 < redis_client.ttl(redis_client.keys("clad:desc:*")[0]) <= 60
    both = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [1, 2] and (both.cached, both.computed) == (1, 2)
    cache.store_batch(descriptions=both.fresh, masks_by_frame={}, latest_by_camera={})
    engine.version = "w-2"  # a new model version: another key for every region
    again = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [1, 2, 3] and (again.cached, again.computed) == (0, 3)


def test_redis_outage_still_describes_every_region(searched: list[int]) -> None:
    dead = RedisRegionCache.from_url("redis://127.0.0.1:1/0", ttl_s=60)  # nothing listens
    verdicts, frames = _batch()
    out = describe_batch({"widget": DescribingEngine()}, verdicts, frames, dead)
    assert searched == [3]
    assert all(r.description for v in out.verdicts for r in v.regions)
    dead.store_batch(descriptions=out.fresh, masks_by_frame={}, latest_by_camera={})  # no raise


def test_a_product_without_describer_keeps_regions_without_text(redis_client: redis.Redis,
                                                                 searched: list[int]) -> None:
    engine = DescribingEngine()
    engine.describer = None
    verdicts, frames = _batch()
    out = describe_batch({"widget": engine}, verdicts, frames,
                         RedisRegionCache(redis_client, ttl_s=60))
    assert searched == [] and out.verdicts == verdicts


def test_the_cache_key_names_the_describer(redis_client: redis.Redis,
                                           searched: list[int]) -> None:
    """Same model version, another describer (the product's own replacing the default):
    its regions are described afresh, never answered from the other's entries."""
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = DescribingEngine()
    engine.describer = dataclasses.replace(engine.describer, identity="default-a",
                                           source="default")
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts, frames, cache)
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    assert searched == [3]
    engine.describer = dataclasses.replace(engine.describer, identity="product-b",
                                           source="product")
    second = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [3, 3] and second.cached == 0 and second.computed == 3
    assert set(second.fresh).isdisjoint(first.fresh)
    cache.store_batch(descriptions=second.fresh, masks_by_frame={}, latest_by_camera={})
    assert len(redis_client.keys("clad:desc:*")) == 6


# what the three regions of _batch() are, in words: 32 px masks on 16 px frames of one
# grey (no contrast): a 6 x 6 mask box is 3 x 3 frame px, a fifth of the frame: a patch
UNNAMED = ["unnamed: a patch, 3 by 3 px, inside, towards the top left",
           "unnamed: a patch, 5 by 4 px, inside, towards the bottom right",
           "unnamed: a thin line, 6 px long, inside, towards the left"]


def test_unsure_regions_keep_the_unclear_kind_and_say_what_their_pixels_show(
        redis_client: redis.Redis, searched: list[int]) -> None:  # fmt: skip
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = DescribingEngine()
    engine.describer = dataclasses.replace(engine.describer, identity="default-a",
                                           unclear_below=1.01)  # nothing is sure enough
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts, frames, cache)
    regions = [r for v in first.verdicts for r in v.regions]
    assert [r.description for r in regions] == UNNAMED
    assert [r.kind for r in regions] == ["unclear"] * 3  # the console groups by kind
    assert all(r.runner_up in {"a crack", "a long crack", "a hole", "a small hole"}
               and r.runner_up_confidence == r.confidence for r in regions)  # the best guess
    # the cache holds the describer's answer; the facts are each region's own
    assert {d["text"] for d in first.fresh.values()} == {"unclear defect"}
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    second = describe_batch({"widget": engine}, verdicts, frames, cache,
                            mm_per_px={"*": 0.5})  # fmt: skip
    assert second.cached == 3 and searched == [3]
    assert [r.description for v in second.verdicts for r in v.regions] == [
        "unnamed: a patch, 3 by 3 px (1.5 by 1.5 mm), inside, towards the top left",
        "unnamed: a patch, 5 by 4 px (2.5 by 2.0 mm), inside, towards the bottom right",
        "unnamed: a thin line, 6 px (3.0 mm) long, inside, towards the left"]


def test_a_camera_s_own_scale_wins_over_the_default() -> None:
    from workers.streaming.descriptions import camera_scale

    scales = {"*": 0.5, "cam-2": 0.1}
    assert camera_scale(scales, "cam-2") == 0.1 and camera_scale(scales, "cam-9") == 0.5
    assert camera_scale({"cam-2": 0.1}, "cam-9") is None and camera_scale(None, "c") is None


def test_regions_sure_only_of_their_group_are_described_and_cached_so(
        redis_client: redis.Redis, searched: list[int]) -> None:  # fmt: skip
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = DescribingEngine()
    lines = Vocabulary("widget", "widget", {"scratch": ["a scratch", "a long scratch"],
                                            "cut": ["a cut", "a slit"]})  # one group: lines
    # no kind is sure enough, the two together always are
    engine.describer = dataclasses.replace(engine.describer, vocabulary=lines,
                                           identity="default-a", unclear_below=1.01,
                                           group_below=0.99)  # fmt: skip
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts, frames, cache)
    regions = [r for v in first.verdicts for r in v.regions]
    phrases = {"a scratch", "a long scratch", "a cut", "a slit"}
    for r in regions:
        one, other = r.description.split(" or ")
        assert {one, other} <= phrases and (one in {"a cut", "a slit"}) != (
            other in {"a cut", "a slit"})  # one phrasing of each kind, likeliest first
        assert r.confidence == pytest.approx(1.0)  # the group's share
        assert r.runner_up == one and r.runner_up_confidence < 1.0  # the likeliest kind
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    second = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert second.cached == 3 and searched == [3]
    assert ([r.description for v in second.verdicts for r in v.regions]
            == [r.description for r in regions])  # fmt: skip


class PixelDescribingEngine(DescribingEngine):
    """A product served by the shipped default describer: it reads the frame's pixels."""

    def __init__(self) -> None:
        from engine.defects.describer_artifacts import load_default_describer

        super().__init__()
        self.describer = load_default_describer()

    def patch_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        from engine.defects.shape_describer import pixel_input

        self.embedded += len(frames)
        return pixel_input(frames)


def test_the_default_describer_goes_through_the_cache(redis_client: redis.Redis,
                                                      searched: list[int]) -> None:
    cache = RedisRegionCache(redis_client, ttl_s=60)
    engine = PixelDescribingEngine()
    verdicts, frames = _batch()
    first = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [3] and first.computed == 3
    texts = [r.description for v in first.verdicts for r in v.regions]
    vocab = engine.describer.vocabulary
    phrases, owner = vocab.phrases()
    group = {p: kind_group(vocab.keys[k]) for p, k in zip(phrases, owner, strict=True)}
    for t in texts:  # a kind's phrasing, two of one group's ("a scratch or a cut"), unclear
        parts = t.split(" or ") if t not in group else [t]
        assert t.startswith("unnamed: ") or (
            all(p in group for p in parts) and len({group[p] for p in parts}) == 1), t
    cache.store_batch(descriptions=first.fresh, masks_by_frame={}, latest_by_camera={})
    second = describe_batch({"widget": engine}, verdicts, frames, cache)
    assert searched == [3] and second.cached == 3
    assert [r.description for v in second.verdicts for r in v.regions] == texts
