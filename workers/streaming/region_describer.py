"""Describe a frame's regions through the Redis region cache.

The region embedding is always computed (it is the cache key: model version +
quantised embedding); the text search over the vocabulary runs only for cache
misses. Cache errors are answered as misses by the cache itself, so an outage
costs the search, never the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.defects.describer import (
    RegionDescriber,
    embed_regions,
    mark_unclear,
    search_descriptions,
)
from pipeline.region_cache import RegionCache, description_key, region_fingerprint

log = logging.getLogger(__name__)


def describe_cached(
    describer: RegionDescriber, patch_emb: torch.Tensor, masks: np.ndarray,
    kinds: Sequence[str], phrases: Sequence[str], cache: RegionCache, model_version: str,
    describer_identity: str = "", unclear_below: float | None = None,
    group_below: float | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One dict per region (kind, text, confidence, runner_up, ..., cached: bool)."""
    emb = embed_regions(describer, patch_emb, masks)
    if emb.shape[0] == 0:
        return []
    owner = description_key(model_version, describer_identity)
    keys = [region_fingerprint(owner, e) for e in emb.numpy()]
    found = cache.get_descriptions(keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    fresh: dict[str, dict[str, Any]] = {}
    if missing:
        described = mark_unclear(search_descriptions(describer, emb[missing], list(kinds),
                                                     list(phrases)), unclear_below,
                                 group_below)  # fmt: skip
        for i, d in zip(missing, described, strict=True):
            fresh[keys[i]] = {"kind": d.kind, "text": d.text, "confidence": d.confidence,
                              "runner_up_kind": d.runner_up_kind, "runner_up": d.runner_up,
                              "runner_up_confidence": d.runner_up_confidence}  # fmt: skip
        cache.store_batch(descriptions=fresh, masks_by_frame={}, latest_by_camera={})
    log.debug("region descriptions: %s cached, %s computed", len(keys) - len(missing),
              len(missing))  # fmt: skip
    return [{**(found.get(k) or fresh[k]), "cached": k in found, "fingerprint": k} for k in keys]
