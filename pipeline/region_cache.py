"""Region cache: descriptions by region fingerprint, masks by frame id, latest
verdict per camera. Redis when configured, else in process.

A cache must never fail a frame: every Redis error is logged and answered as a
miss (reads) or dropped (writes); the caller then computes what it needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import redis

log = logging.getLogger(__name__)

DESCRIPTION_KEY = "clad:desc:{fingerprint}"
MASKS_KEY = "clad:masks:{frame_id}"
LATEST_KEY = "clad:latest:{camera_id}"


def region_fingerprint(model_version: str, embedding: np.ndarray, step: float = 0.05) -> str:
    """Stable key for 'the same defect seen again': the model version plus the
    region embedding quantised to `step`, so tiny numeric noise maps to one key."""
    vector = np.asarray(embedding, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector)) or 1.0
    quantised = np.round(vector / norm / step).astype(np.int16)
    digest = hashlib.sha256(model_version.encode() + b"\0" + quantised.tobytes())
    return digest.hexdigest()[:32]


def description_key(model_version: str, describer_identity: str) -> str:
    """What a cached description is keyed by besides the region: the model version and
    which describer made it (a product's own describer replacing the default one, or a
    retrained one, must not be answered from the other's entries)."""
    return f"{model_version}|{describer_identity}" if describer_identity else model_version


class RegionCache(Protocol):
    def get_descriptions(self, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def store_batch(self, *, descriptions: Mapping[str, dict[str, Any]],
                    masks_by_frame: Mapping[str, list[dict[str, Any]]],
                    latest_by_camera: Mapping[str, dict[str, Any]]) -> None: ...

    def get_masks(self, frame_id: str) -> list[dict[str, Any]] | None: ...

    def get_latest_verdict(self, camera_id: str) -> dict[str, Any] | None: ...


class RedisRegionCache:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, ttl_s: int) -> RedisRegionCache:
        # Short timeouts: a dead cache must cost a frame milliseconds, not seconds.
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        return cls(client, ttl_s)

    def get_descriptions(self, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not fingerprints:
            return {}
        try:
            values = self._client.mget([DESCRIPTION_KEY.format(fingerprint=f)
                                        for f in fingerprints])
        except redis.RedisError as exc:
            log.warning("region cache unavailable, computing descriptions: %s", exc)
            return {}
        return {f: json.loads(v) for f, v in zip(fingerprints, values, strict=True) if v}

    def store_batch(self, *, descriptions: Mapping[str, dict[str, Any]],
                    masks_by_frame: Mapping[str, list[dict[str, Any]]],
                    latest_by_camera: Mapping[str, dict[str, Any]]) -> None:
        started = time.perf_counter()
        try:
            # One round trip per batch, applied atomically.
            pipe = self._client.pipeline(transaction=True)
            for fingerprint, value in descriptions.items():
                pipe.set(DESCRIPTION_KEY.format(fingerprint=fingerprint), json.dumps(value),
                         ex=self._ttl_s)
            for frame_id, masks in masks_by_frame.items():
                pipe.set(MASKS_KEY.format(frame_id=frame_id), json.dumps(masks), ex=self._ttl_s)
            for camera_id, verdict in latest_by_camera.items():
                pipe.set(LATEST_KEY.format(camera_id=camera_id), json.dumps(verdict))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("region cache write dropped (%s keys): %s",
                        len(descriptions) + len(masks_by_frame) + len(latest_by_camera), exc)
            return
        log.debug("region cache batch written in %.1f ms", (time.perf_counter() - started) * 1e3)

    def _get_json(self, key: str) -> Any:
        try:
            value = self._client.get(key)
        except redis.RedisError as exc:
            log.warning("region cache unavailable: %s", exc)
            return None
        return json.loads(value) if value else None

    def get_masks(self, frame_id: str) -> list[dict[str, Any]] | None:
        return self._get_json(MASKS_KEY.format(frame_id=frame_id))

    def get_latest_verdict(self, camera_id: str) -> dict[str, Any] | None:
        return self._get_json(LATEST_KEY.format(camera_id=camera_id))


class InProcessRegionCache:
    """The same contract in memory, for one worker or the demo without Redis."""

    def __init__(self, ttl_s: int, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _set(self, key: str, value: Any, ttl_s: float | None) -> None:
        expires = time.monotonic() + ttl_s if ttl_s else float("inf")
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.pop(next(iter(self._entries)))  # oldest insertion first
            self._entries[key] = (expires, value)

    def _get(self, key: str) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._entries[key]
                return None
            return entry[1]

    def get_descriptions(self, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = {f: self._get(DESCRIPTION_KEY.format(fingerprint=f)) for f in fingerprints}
        return {f: v for f, v in found.items() if v is not None}

    def store_batch(self, *, descriptions: Mapping[str, dict[str, Any]],
                    masks_by_frame: Mapping[str, list[dict[str, Any]]],
                    latest_by_camera: Mapping[str, dict[str, Any]]) -> None:
        for fingerprint, value in descriptions.items():
            self._set(DESCRIPTION_KEY.format(fingerprint=fingerprint), value, self._ttl_s)
        for frame_id, masks in masks_by_frame.items():
            self._set(MASKS_KEY.format(frame_id=frame_id), masks, self._ttl_s)
        for camera_id, verdict in latest_by_camera.items():
            self._set(LATEST_KEY.format(camera_id=camera_id), verdict, None)

    def get_masks(self, frame_id: str) -> list[dict[str, Any]] | None:
        return self._get(MASKS_KEY.format(frame_id=frame_id))

    def get_latest_verdict(self, camera_id: str) -> dict[str, Any] | None:
        return self._get(LATEST_KEY.format(camera_id=camera_id))


def make_region_cache(redis_url: str | None, ttl_s: int) -> RegionCache:
    if redis_url is None:
        return InProcessRegionCache(ttl_s)
    return RedisRegionCache.from_url(redis_url, ttl_s)
