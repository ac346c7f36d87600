import fakeredis
import numpy as np
import pytest
import redis

from pipeline.region_cache import InProcessRegionCache, RedisRegionCache, region_fingerprint

pytestmark = pytest.mark.unit


def test_fingerprint_is_stable_under_noise_and_changes_with_version() -> None:
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=64)
    noisy = embedding + rng.normal(scale=1e-5, size=64)
    assert region_fingerprint("v1", embedding) == region_fingerprint("v1", noisy)
    assert region_fingerprint("v1", embedding) != region_fingerprint("v2", embedding)
    assert region_fingerprint("v1", embedding) != region_fingerprint("v1", -embedding)


@pytest.mark.parametrize("cache_kind", ["fakeredis", "memory"])
def test_store_then_read(cache_kind: str) -> None:
    if cache_kind == "fakeredis":
        cache = RedisRegionCache(fakeredis.FakeRedis(), ttl_s=60)
    else:
        cache = InProcessRegionCache(ttl_s=60)
    cache.store_batch(descriptions={"fp1": {"description": "a crack", "confidence": 0.7}},
                      masks_by_frame={"f1": [{"index": 0, "area": 4}]},
                      latest_by_camera={"cam": {"frame_id": "f1", "score": 0.9}})
    assert cache.get_descriptions(["fp1", "fp2"]) == {
        "fp1": {"description": "a crack", "confidence": 0.7}}
    assert cache.get_masks("f1") == [{"index": 0, "area": 4}]
    assert cache.get_latest_verdict("cam")["score"] == 0.9
    assert cache.get_masks("nope") is None


def test_in_process_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("pipeline.region_cache.time.monotonic", lambda: now[0])
    cache = InProcessRegionCache(ttl_s=10)
    cache.store_batch(descriptions={"fp": {"d": 1}}, masks_by_frame={}, latest_by_camera={})
    now[0] += 9
    assert cache.get_descriptions(["fp"]) == {"fp": {"d": 1}}
    now[0] += 2
    assert cache.get_descriptions(["fp"]) == {}


def test_outage_is_a_miss_not_an_error() -> None:
    # Nothing listens on port 1: every call fails to connect.
    cache = RedisRegionCache(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)
    assert cache.get_descriptions(["fp"]) == {}
    cache.store_batch(descriptions={"fp": {"d": 1}}, masks_by_frame={}, latest_by_camera={})
    assert cache.get_masks("f") is None
