"""Cached region descriptions against real Redis: miss computes and stores, a hit skips
the text search, an outage falls back to computing and never fails the frame."""

from __future__ import annotations

import numpy as np
import pytest
import redis
import torch

import workers.streaming.region_describer as rd
from engine.defects.describer import RegionDescriber
from pipeline.region_cache import RedisRegionCache
from tests.integration.describer_support import count_description_searches

pytestmark = pytest.mark.integration

KINDS = ["crack", "hole"]
PHRASES = ["a crack", "a long crack", "a hole", "a small hole"]


@pytest.fixture
def describer() -> RegionDescriber:
    torch.manual_seed(0)
    return RegionDescriber(6, 10, torch.randn(4, 10), [0, 0, 1, 1], joint_dim=8, hidden=16,
                           grid=8)  # fmt: skip


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts text searches (and how many regions each covered)."""
    return count_description_searches(monkeypatch, rd)


def _frame() -> tuple[torch.Tensor, np.ndarray]:
    torch.manual_seed(1)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 20:30, 10:30] = True
    return torch.randn(1, 6, 8, 8), masks


def test_miss_then_hit_skips_the_text_search(redis_client: redis.Redis, describer,
                                             searches: list[int]) -> None:  # fmt: skip
    cache = RedisRegionCache(redis_client, ttl_s=60)
    emb, masks = _frame()
    first = rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1")
    assert searches == [2] and not any(r["cached"] for r in first)
    assert len(redis_client.keys("clad:desc:*")) == 2
    assert 0 < redis_client.ttl(redis_client.keys("clad:desc:*")[0]) <= 60
    second = rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1")
    assert searches == [2]  # no new search: both regions came from Redis
    assert all(r["cached"] for r in second)
    assert [r["text"] for r in second] == [r["text"] for r in first]
    # a new model version is a different key: computed again
    rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v2")
    assert searches == [2, 2]


def test_partial_hit_searches_only_the_new_region(redis_client: redis.Redis, describer,
                                                  searches: list[int]) -> None:  # fmt: skip
    cache = RedisRegionCache(redis_client, ttl_s=60)
    emb, masks = _frame()
    rd.describe_cached(describer, emb, masks[:1], KINDS, PHRASES, cache, "v1")
    out = rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1")
    assert searches == [1, 1] and [r["cached"] for r in out] == [True, False]


def test_redis_outage_falls_back_to_computing(describer, searches: list[int]) -> None:
    dead = RedisRegionCache.from_url("redis://127.0.0.1:1/0", ttl_s=60)  # nothing listens
    emb, masks = _frame()
    out = rd.describe_cached(describer, emb, masks, KINDS, PHRASES, dead, "v1")
    assert searches == [2] and len(out) == 2 and all(r["kind"] in KINDS for r in out)
    assert all(not r["cached"] for r in out)


def test_another_describer_of_the_same_model_is_another_key(
        redis_client: redis.Redis, describer, searches: list[int]) -> None:  # noqa: ANN001
    cache = RedisRegionCache(redis_client, ttl_s=60)
    emb, masks = _frame()
    rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1", "default-a")
    rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1", "default-a")
    assert searches == [2]
    out = rd.describe_cached(describer, emb, masks, KINDS, PHRASES, cache, "v1", "product-b",
                             unclear_below=1.01)  # fmt: skip
    assert searches == [2, 2] and [r["text"] for r in out] == ["unclear defect"] * 2
