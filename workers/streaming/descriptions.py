"""Region descriptions for a whole batch, through the region cache.

Per batch: region embeddings (the cache key) for every frame that has regions,
ONE cache lookup for all their fingerprints, the vocabulary search only for the
misses, and the fresh descriptions handed back for the batch's single cache
write. A cache outage reads as all-miss (RegionCache contract); a describer that
fails leaves that product's regions without text. Neither ever fails a frame.

A region the describer names no kind for (kind "unclear") reads what its pixels say
instead (engine.defects.region_facts: "unnamed: a dark thin line, 62 px long, at the
left edge"), computed per region from its mask and frame, after the cache: the cached
answer is the describer's, the facts are the region's own.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from engine.defects import rle
from engine.defects.defect_kinds import UNCLEAR
from engine.defects.region_facts import facts_text, region_facts
from pipeline.region_cache import RegionCache, description_key, region_fingerprint
from pipeline.storage.records import RegionRecord, VerdictRecord
from workers.streaming.decode import DecodedFrame
from workers.streaming.scoring import ScoringEngine

log = logging.getLogger(__name__)


@dataclass
class DescribedBatch:
    verdicts: list[VerdictRecord]
    fresh: dict[str, dict[str, Any]] = field(default_factory=dict)  # to write to the cache
    cached: int = 0
    computed: int = 0


@dataclass
class _Pending:
    index: int  # position in the batch's verdict list
    keys: list[str]
    emb: Any  # torch.Tensor [R, D]
    describer: str  # the identity of the describer that embedded them
    masks: np.ndarray  # [R, h, w] bool, the regions' masks at the stored map size


def camera_scale(mm_per_px: Mapping[str, float] | None, camera_id: str) -> float | None:
    """The camera's millimetres per frame pixel ("*": any camera without its own)."""
    if not mm_per_px:
        return None
    return mm_per_px.get(camera_id, mm_per_px.get("*"))


def unnamed_text(verdict: VerdictRecord, mask: np.ndarray, frame: DecodedFrame,
                 mm_per_px: float | None) -> str:
    """What the region's pixels say, for a region no kind was named for."""
    facts = region_facts(mask, frame.model_input, (verdict.width, verdict.height))
    return facts_text(facts, mm_per_px)


def _as_record(region: RegionRecord, d: Mapping[str, Any], describer: str,
               embedding: np.ndarray, unnamed: Callable[[], str]) -> RegionRecord:
    text = d.get("text")
    if d.get("kind") == UNCLEAR:
        try:
            text = unnamed()
        except Exception:  # noqa: BLE001 - the describer's own answer is still an answer
            log.exception("region facts failed; the region keeps %r", text)
    return dataclasses.replace(region, description=text, confidence=d.get("confidence"),
                               runner_up=d.get("runner_up"),
                               runner_up_confidence=d.get("runner_up_confidence"),
                               kind=d.get("kind"), describer=describer or None,
                               embedding=np.asarray(embedding, np.float32).tobytes())


def _embed_product(engine: ScoringEngine, verdicts: Sequence[VerdictRecord],
                   indices: list[int], frames: Mapping[uuid.UUID, DecodedFrame]
                   ) -> list[_Pending]:
    from engine.defects.describer import embed_regions

    loaded = engine.describer  # type: ignore[attr-defined]
    patch = engine.patch_embeddings(  # type: ignore[attr-defined]
        np.stack([frames[verdicts[i].frame_id].model_input for i in indices]))
    out = []
    for row, i in enumerate(indices):
        masks = np.stack([rle.decode(r.mask_rle) for r in verdicts[i].regions])
        emb = embed_regions(loaded.describer, patch[row:row + 1], masks)
        owner = description_key(engine.version, loaded.identity)
        keys = [region_fingerprint(owner, e) for e in emb.numpy()]
        out.append(_Pending(i, keys, emb, loaded.identity, masks))
    return out


def _search(engine: ScoringEngine, pending: list[_Pending],
            found: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Vocabulary search for the regions no cache entry covers, in one call."""
    import torch

    from engine.defects.describer import mark_unclear, search_descriptions

    rows = [(p, j) for p in pending for j, k in enumerate(p.keys) if k not in found]
    if not rows:
        return {}
    loaded = engine.describer  # type: ignore[attr-defined]
    phrases, _owner = loaded.vocabulary.phrases()
    emb = torch.stack([p.emb[j] for p, j in rows])
    described = mark_unclear(search_descriptions(loaded.describer, emb, loaded.vocabulary.keys,
                                                 phrases), loaded.unclear_below,
                             loaded.group_below)  # fmt: skip
    return {p.keys[j]: {"kind": d.kind, "text": d.text, "confidence": d.confidence,
                        "runner_up_kind": d.runner_up_kind, "runner_up": d.runner_up,
                        "runner_up_confidence": d.runner_up_confidence}
            for (p, j), d in zip(rows, described, strict=True)}


def describe_batch(engines: Mapping[str, ScoringEngine], verdicts: Sequence[VerdictRecord],
                   frames: Mapping[uuid.UUID, DecodedFrame], cache: RegionCache,
                   mm_per_px: Mapping[str, float] | None = None) -> DescribedBatch:
    """Verdicts with their regions described where the product has a describer (its
    own or the default one: the engine carries whichever serves it). `mm_per_px`: camera
    id -> millimetres per frame pixel, for the sizes of unnamed regions."""
    out = DescribedBatch(list(verdicts))
    by_product: dict[str, list[int]] = {}
    for i, v in enumerate(verdicts):
        if v.regions and getattr(engines.get(v.product), "describer", None) is not None:
            by_product.setdefault(v.product, []).append(i)
    if not by_product:
        return out
    pending: dict[str, list[_Pending]] = {}
    for product, indices in by_product.items():
        try:
            pending[product] = _embed_product(engines[product], verdicts, indices, frames)
        except Exception:  # noqa: BLE001 - a description is never worth a frame
            log.exception("region embedding failed for %s frames of %s; no descriptions",
                          len(indices), product)
    keys = sorted({k for ps in pending.values() for p in ps for k in p.keys})
    found = cache.get_descriptions(keys)  # one round trip for the whole batch
    for product, ps in pending.items():
        try:
            out.fresh.update(_search(engines[product], ps, found))
        except Exception:  # noqa: BLE001
            log.exception("description search failed for %s; regions left without text",
                          product)
            continue
        known = {**found, **out.fresh}
        for p in ps:
            v = verdicts[p.index]
            emb = p.emb.numpy()
            frame, scale = frames[v.frame_id], camera_scale(mm_per_px, v.camera_id)
            out.verdicts[p.index] = dataclasses.replace(v, regions=tuple(
                _as_record(r, known[k], p.describer, emb[j],
                           partial(unnamed_text, v, p.masks[j], frame, scale))
                for j, (r, k) in enumerate(zip(v.regions, p.keys, strict=True))))
    out.cached = sum(k in found for ps in pending.values() for p in ps for k in p.keys)
    out.computed = len(out.fresh)
    return out
