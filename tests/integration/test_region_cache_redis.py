import pytest
import redis

from pipeline.region_cache import RedisRegionCache

pytestmark = pytest.mark.integration


def test_real_redis_round_trip_with_ttl(redis_client: redis.Redis) -> None:
    cache = RedisRegionCache(redis_client, ttl_s=120)
    cache.store_batch(descriptions={"fp": {"description": "a scratch", "confidence": 0.6}},
                      masks_by_frame={"frame-1": [{"index": 0, "bbox": [1, 2, 3, 4]}]},
                      latest_by_camera={"cam-1": {"frame_id": "frame-1", "label": "anomalous"}})
    assert cache.get_descriptions(["fp"])["fp"]["description"] == "a scratch"
    assert cache.get_masks("frame-1")[0]["bbox"] == [1, 2, 3, 4]
    assert cache.get_latest_verdict("cam-1")["label"] == "anomalous"
    assert 0 < redis_client.ttl("clad:desc:fp") <= 120
    assert 0 < redis_client.ttl("clad:masks:frame-1") <= 120
    assert redis_client.ttl("clad:latest:cam-1") == -1  # latest verdict never expires
