"""Line context: score frames against the references AND recent unlabeled frames of the
same product (mutual scoring, as MuSc, ICLR 2024).

A production line shows hundreds of frames of one product, nearly all normal. For every
patch of a frame: the nearest-patch distance to each context frame, then the mean of the
smallest `share` of those (a defect patch has no close match in most frames, a normal
one has many; the mean over several frames keeps one frame with the same defect from
vouching for it), then fused with the reference distance.

Guards, because the context is filled from unlabeled frames:
- `floor`: the fused distance never drops below `floor` x the reference distance, so a
  context full of defects can at most scale a defect's score down, never erase it;
- admission, on the frame's reference-only score (stationary: it does not depend on the
  context): a frame joins the context only when that score is under a cut (the
  threshold, and after a warm-up also median + k·MAD of the scores under the cut) AND in the
  lower `admit_quantile` of the recent frames' scores. So a burst of one defect is
  scored but never learnt as normal, and where many frames are defective only the
  most reference-like ones vouch for what is normal;
- `drift`: the share of recent frames above the cut; a jump means the line changed
  (a new defect, a camera move) rather than a single bad part.

Each frame is searched against only the `search_frames` context frames most like it as a
whole (half the cost at the default bound; suite online means within 0.13). The
nearest-neighbour search runs in torch on the runtime's patch embeddings, outside the
exported graph, over a `ContextIndex` (the context's embeddings as contiguous matrices,
kept per product and updated on admission); `CladRuntime.finish` does the rest exactly
as the plain forward.

The lead (issue 33): the context can only lower a score, so a frame whose reference-only
score is already under the threshold is not searched; it keeps that score and map
(`score_searched`). Verdicts are exactly those of searching every frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.scoring.runtime_model import AnomalyOutput, CladRuntime, patch_embeddings

T = TypeVar("T")


class ContextConfig(BaseModel):
    """How a product's line context is kept and how it changes a score."""

    model_config = ConfigDict(frozen=True)

    # bounded memory and cost: O(max_frames) NN searches per frame. 32, not 64: the
    # suite's online means moved by <= 0.1 (K=1 86.3/90.3 vs 86.2/90.4, K=4 87.3/90.3 vs
    # 87.3/90.4) and the worker's CPU path scores 1.37x the frames (NOTES.md, session 5)
    max_frames: int = 32
    max_age_s: float = 3600.0  # older frames leave (lighting, batches of material change)
    min_frames: int = 3  # fewer admitted frames -> reference only
    share: float = 0.3  # mean of the smallest 30% per-frame distances (MuSc)
    floor: float = 0.0  # fused >= floor * reference distance (0 = plain min)
    warmup: int = 8  # frames under the cut before the robust cut applies
    admit_mad: float = 3.0  # robust cut = median + admit_mad * MAD of the scores under it
    # MAD at least this share of the median: near-identical scores must not make a cut so
    # tight that ordinary normal frames count as drift
    min_mad_ratio: float = 0.05
    score_window: int = 256  # scores under the cut that the robust cut is computed from
    # only frames in the lower share of the recent frames' scores are admitted: on a line
    # with many defective frames the context is drawn from its most normal-looking part
    admit_quantile: float = 0.5
    rank_window: int = 256  # recent scores (all frames) the quantile is taken over
    drift_window: int = 50  # recent frames the drift share is computed over
    # each frame is searched against only this many context frames, the ones most like it
    # (cosine of mean-pooled embeddings); the reduction still averages the smallest
    # `share` x all context frames. Half the search at 32 frames, suite online means
    # within 0.13 of searching all (NOTES.md, session 6); 0 = search them all
    search_frames: int = Field(16, ge=0)
    # the lead (score_searched): a frame whose reference-only score is already under the
    # threshold is normal whatever its context says, so it is not searched and keeps its
    # reference-only score and map; exact for every verdict (issue 33). Off: every frame
    # is searched and stores its fused score.
    lead: bool = True
    # the context search's arithmetic (ContextIndex); bf16 is measured, not adopted
    search_precision: Literal["fp32", "bf16"] = "fp32"


def per_frame_distances(emb: torch.Tensor, context: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Cosine distance of every patch of emb [N, C, h, w] to its nearest patch in each
    context frame [M, C, h', w'] (both L2-normalised) -> [N, M, h*w]."""
    n, c = emb.shape[:2]
    q = emb.flatten(2).transpose(1, 2)  # [N, P, C]
    ctx = context.flatten(2).transpose(1, 2)  # [M, P', C]
    out = []
    for start in range(0, ctx.shape[0], chunk):
        part = ctx[start : start + chunk]  # [m, P', C]
        sim = torch.einsum("npc,mqc->nmpq", q, part)
        out.append(1.0 - sim.amax(dim=-1))
    if not out:
        return emb.new_zeros(n, 0, q.shape[1])
    return torch.cat(out, dim=1)


def reduce_context(dist: torch.Tensor, share: float, of_frames: int = 0) -> torch.Tensor:
    """[N, M, P] per-frame distances -> [N, P]: mean of the smallest ceil(share * frames),
    frames = `of_frames` when the M searched are a subset of them, else M."""
    m = dist.shape[1]
    k = min(m, max(1, math.ceil(share * (of_frames or m))))
    return dist.topk(k, dim=1, largest=False).values.mean(dim=1)


def frame_descriptor(emb: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] patch embeddings -> [N, C] unit mean-pooled frame descriptors."""
    return torch.nn.functional.normalize(emb.mean(dim=(2, 3)), dim=1)


def context_distances(
    emb: torch.Tensor, context: torch.Tensor, cfg: ContextConfig, picks: list[torch.Tensor] | None
) -> torch.Tensor:
    """[N, P] reduced context distances of emb [N, C, h, w] to context [M, C, h', w'];
    `picks` (one index tensor per frame, from `pick_frames`) limits each frame's search."""
    if picks is None:
        return reduce_context(per_frame_distances(emb, context), cfg.share)
    m = context.shape[0]
    rows = [
        reduce_context(per_frame_distances(emb[i : i + 1], context[idx]), cfg.share, m)
        for i, idx in enumerate(picks)
    ]
    return torch.cat(rows)


def pick_frames(
    emb: torch.Tensor, context: torch.Tensor, cfg: ContextConfig
) -> list[torch.Tensor] | None:
    """Per frame of emb, the `cfg.search_frames` context frames most like it; None = all."""
    if not cfg.search_frames or context.shape[0] <= cfg.search_frames:
        return None
    return list(most_alike(frame_descriptor(emb), frame_descriptor(context), cfg.search_frames))


def most_alike(queries: torch.Tensor, context: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k] indices of the k context descriptors [M, C] most like each query's [N, C]."""
    return (queries @ context.T).topk(k, dim=1).indices


def fuse(
    reference: torch.Tensor | None, context: torch.Tensor | None, floor: float
) -> torch.Tensor:
    """Reference and context distance maps (same units) -> one map.

    min: a patch is normal when the references OR the line's frames show it; the floor
    bounds how much the context can lower a reference distance."""
    if context is None:
        if reference is None:
            raise ValueError("neither references nor context: nothing to score with")
        return reference
    if reference is None:
        return context
    fused = torch.minimum(reference, context)
    return torch.maximum(fused, floor * reference) if floor > 0 else fused


@dataclass
class Embeddings:
    """A frame's patch embeddings: image-score grid and pixel-map grid (same when one map)."""

    image: torch.Tensor  # [C, h, w]
    pixel: torch.Tensor  # [C, h, w]


@torch.no_grad()
def embed(rt: CladRuntime, frames: torch.Tensor) -> tuple[list[torch.Tensor], list[Embeddings]]:
    """Encoder features and per-frame embeddings of uint8 NHWC frames."""
    feats = rt.encoder.forward_features(rt.preprocess(frames))
    # contiguous, as the ONNX stage's outputs are: on the channels-last strides the
    # convolutions leave, the context search over these frames ran ~2x slower
    emb = patch_embeddings(feats, rt.pool).contiguous()
    pemb = patch_embeddings(feats, rt.pixel_pool).contiguous() if rt.split_maps else emb
    return feats, [Embeddings(emb[i], pemb[i]) for i in range(emb.shape[0])]


class ContextIndex:
    """The context's embeddings kept ready for the search, per product.

    One contiguous [slots, P, C] matrix per map (rows = a frame's patches, already
    L2-normalised by `patch_embeddings`) and one [slots, C] matrix of frame descriptors.
    `sync` brings it in line with the context's payloads: only a newly admitted frame is
    copied in (and its descriptor computed), an evicted one frees its slot; nothing is
    rebuilt per call. `distances` searches each query frame with one matrix product
    against its picked frames, gathered into a reused buffer, then reduces it with
    `out=` reductions into reused buffers (allocation-free per frame on the CPU).
    """

    def __init__(self, precision: Literal["fp32", "bf16"] = "fp32") -> None:
        # bf16: the matrices and the products in bfloat16 (3-5x less CPU for the GEMM on
        # an AVX512-BF16 host; ~2e-3 on a similarity), reductions in fp32. Not exact: the
        # default stays fp32 until the suite's line protocol is run with it (NOTES.md)
        self._store = torch.bfloat16 if precision == "bf16" else None
        self._held: dict[int, tuple[Embeddings, int]] = {}  # id(payload) -> (payload, slot)
        self._free: list[int] = []
        self._image: torch.Tensor | None = None  # [slots, P, C]
        self._pixel: torch.Tensor | None = None  # [slots, P, C]; None: one map
        self._desc: torch.Tensor | None = None  # [slots, C]
        self._active = torch.zeros(0, dtype=torch.long)  # slots in the context's order
        self._work: dict[tuple, torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self._active.numel())

    def sync(self, items: Sequence[Embeddings]) -> ContextIndex:
        """Hold exactly `items` (the context, oldest first); copy in only new frames."""
        if items and not self._fits(items[0]):  # first frame, or another model's: restart
            self._held, self._free = {}, []
            self._image = self._pixel = self._desc = None
            self._grow(items[0], 8)
        keep = {id(e) for e in items}
        for key in [k for k in self._held if k not in keep]:
            self._free.append(self._held.pop(key)[1])
        slots = []
        for e in items:
            held = self._held.get(id(e))
            if held is None or held[0] is not e:
                held = (e, self._insert(e))
                self._held[id(e)] = held
            slots.append(held[1])
        self._active = torch.tensor(slots, dtype=torch.long)
        return self

    def _fits(self, e: Embeddings) -> bool:
        c, h, w = e.image.shape
        bank = self._image
        return (
            bank is not None
            and bank.shape[1:] == (h * w, c)
            and bank.dtype == (self._store or e.image.dtype)
            and bank.device == e.image.device
            and (self._pixel is None) == (e.pixel is e.image)
        )

    def _insert(self, e: Embeddings) -> int:
        c, h, w = e.image.shape
        if not self._free:
            self._grow(e, 2 * self._image.shape[0])  # type: ignore[union-attr]
        slot = self._free.pop()
        self._image[slot] = e.image.permute(1, 2, 0).reshape(h * w, c)  # type: ignore[index]
        if self._pixel is not None:
            self._pixel[slot] = e.pixel.permute(1, 2, 0).reshape(h * w, c)
        self._desc[slot] = frame_descriptor(e.image[None])[0]  # type: ignore[index]
        return slot

    def _grow(self, e: Embeddings, slots: int) -> None:
        c, h, w = e.image.shape
        old = 0 if self._image is None else self._image.shape[0]
        like = {"dtype": self._store or e.image.dtype, "device": e.image.device}
        one_map = e.pixel is e.image

        def grown(
            t: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype | None = None
        ) -> torch.Tensor:
            new = torch.zeros(slots, *shape, dtype=dtype or like["dtype"], device=like["device"])
            if t is not None:
                new[:old] = t
            return new

        self._image = grown(self._image, (h * w, c))
        self._pixel = None if one_map else grown(self._pixel, (h * w, c))
        self._desc = grown(self._desc, (c,), e.image.dtype)  # descriptors: never narrowed
        self._free = list(range(slots - 1, old - 1, -1)) + self._free

    def pick(self, emb: torch.Tensor, cfg: ContextConfig) -> torch.Tensor | None:
        """[N, search_frames] slots of the context frames most like each query frame
        (same choice as `pick_frames` on the stacked context); None = all of them."""
        m = len(self)
        if not cfg.search_frames or m <= cfg.search_frames:
            return None
        assert self._desc is not None
        order = most_alike(frame_descriptor(emb), self._desc[self._active], cfg.search_frames)
        return self._active[order]

    def distances(
        self, emb: torch.Tensor, pemb: torch.Tensor | None, picks: torch.Tensor | None,
        cfg: ContextConfig,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Reduced context distances [N, P] of the image (and pixel) embeddings
        [N, C, h, w]: per context frame the nearest patch, then the mean of the
        ceil(share x all frames) smallest, as `context_distances`."""
        m = len(self)
        assert self._image is not None and m > 0
        n = emb.shape[0]
        slots = self._active.expand(n, m) if picks is None else picks
        k = min(slots.shape[1], max(1, math.ceil(cfg.share * m)))
        image = self._search(self._image, emb, slots, k)
        if pemb is None:
            return image, None
        if self._pixel is None:
            raise ValueError("context index: the context frames have one map, the query two")
        return image, self._search(self._pixel, pemb, slots, k)

    def _search(
        self, bank: torch.Tensor, emb: torch.Tensor, slots: torch.Tensor, k: int
    ) -> torch.Tensor:
        n, c = emb.shape[:2]
        p, s = bank.shape[1], slots.shape[1]
        cpu = bank.device.type == "cpu"
        gathered = self._buffer("gathered", (s * p, c), bank)
        flat = bank.view(-1, c)
        patch = torch.arange(p, device=bank.device)
        rows = self._buffer("rows", (s, p), bank, torch.long)
        sim = self._buffer("sim", (p, s * p), bank)
        nearest = self._buffer("nearest", (p, s), bank)
        wide = torch.float32 if bank.dtype == torch.bfloat16 else bank.dtype
        nearest_wide = self._buffer("nearest_wide", (p, s), bank, wide)
        top = self._buffer("top", (p, k), bank, wide)
        top_idx = self._buffer("top_idx", (p, k), bank, torch.long)
        out = torch.empty(n, p, dtype=wide, device=bank.device)
        emb = emb.to(bank.dtype)
        for i in range(n):
            q = emb[i].reshape(c, p).T  # [P, C] view
            if cpu:  # the same products and reductions, into the reused buffers
                # the picked frames' rows by flat row index: index_select over the 16
                # frames of a [slots, P, C] matrix ran ~100x slower on 2 busy cores
                torch.add(patch, slots[i][:, None] * p, out=rows)
                torch.index_select(flat, 0, rows.view(-1), out=gathered)
                torch.mm(q, gathered.T, out=sim)
                torch.amax(sim.view(p, s, p), dim=2, out=nearest)
                # the reductions in fp32 (a copy only when the search ran in bf16)
                best = nearest if wide is bank.dtype else nearest_wide.copy_(nearest)
                torch.topk(best, k, dim=1, out=(top, top_idx))
                torch.mean(top, dim=1, out=out[i])
            else:  # out= variants and autocast do not mix: plain ops on a GPU
                g = bank[slots[i]].reshape(s * p, c)
                best = (q @ g.T).view(p, s, p).amax(dim=2).to(wide)
                out[i] = best.topk(k, dim=1).values.mean(dim=1)
        # largest similarities = smallest distances: 1 - mean(sim) = mean(1 - sim)
        return out.neg_().add_(1.0)

    def _buffer(
        self, name: str, shape: tuple[int, ...], like: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:  # fmt: skip
        key = (name, shape, dtype or like.dtype, like.device)
        buf = self._work.get(key)
        if buf is None:
            self._work = {k: v for k, v in self._work.items() if k[0] != name}
            buf = self._work[key] = torch.empty(shape, dtype=dtype or like.dtype,
                                                device=like.device)  # fmt: skip
        return buf


@torch.no_grad()
def score_with_context(
    rt: CladRuntime,
    frames: torch.Tensor,
    context: Sequence[Embeddings],
    cfg: ContextConfig,
    stage: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    *,
    index: ContextIndex | None = None,
    threshold: float = math.inf,
) -> tuple[AnomalyOutput, list[Embeddings], torch.Tensor]:
    """Score uint8 NHWC frames against the runtime's bank and the context frames.

    Returns (output, the frames' embeddings, reference-only image scores [N] — the
    admission score; equal to output.scores without context or without a bank's
    fusion). Context distances are divided by the runtime's reference scales, so scores
    keep their meaning (~1 = as normal as the references) and the threshold applies.
    With fewer than `cfg.min_frames` context frames the output equals `rt(frames)`.
    `stage` (engine.runtime.context_stage, e.g. under onnxruntime) replaces the encoder,
    embeddings and reference search; the runtime must then have no text branch.
    `index`: the product's `ContextIndex` (kept between calls; synced here to
    `context`); None builds one for this call. `threshold` with `cfg.lead`: see
    `score_searched`.
    """
    out, embs, reference, _searched = score_searched(
        rt, frames, context, cfg, stage, index=index, threshold=threshold
    )
    return out, embs, reference


@torch.no_grad()
def score_searched(
    rt: CladRuntime,
    frames: torch.Tensor,
    context: Sequence[Embeddings],
    cfg: ContextConfig,
    stage: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    *,
    index: ContextIndex | None = None,
    threshold: float = math.inf,
) -> tuple[AnomalyOutput, list[Embeddings], torch.Tensor, torch.Tensor]:
    """`score_with_context`, plus a bool [N]: which frames were searched in the context.

    The lead (`cfg.lead`, exact for the verdict): the fused distance never exceeds the
    reference distance (min, and a floor <= 1 of it), the map chain has non-negative
    weights and the top-k mean is monotone, so the context can only lower a frame's
    score. A frame whose reference-only score is already <= `threshold` is normal
    whatever its context holds; it is not searched, and its output is its
    reference-only score and map (an upper bound of the fused ones). Only frames over
    the threshold, the ones the context may clear, are searched.
    """
    has_bank = rt.bank.shape[0] > 0
    if stage is not None:
        emb, pemb, amap, pmap = stage(frames)
        pmap = pmap if rt.split_maps else None
        feats = [emb]  # finish() reads only the batch size without a text branch
        embs = [Embeddings(emb[i], pemb[i]) for i in range(emb.shape[0])]
    else:
        feats, embs = embed(rt, frames)
        emb = torch.stack([e.image for e in embs])
        pemb = torch.stack([e.pixel for e in embs])
        amap = rt.bank_map(emb) if has_bank else None
        pmap = rt.bank_map(pemb, pixel=True) if rt.split_maps else None
    n, _, h, w = emb.shape
    height, width = frames.shape[1:3]
    nobody = torch.zeros(n, dtype=torch.bool)
    if len(context) < cfg.min_frames:
        out = rt.finish(feats, _weighted(rt, amap), _weighted(rt, pmap), height, width)
        return out, embs, out.scores, nobody
    if amap is None:  # no bank: the context alone scores, every frame is searched
        searched, base, reference_scores = torch.ones(n, dtype=torch.bool), None, None
    else:
        # reference-only scores and maps of the whole batch: the admission score, and the
        # output of every frame the lead spares (the image score is taken at the
        # processing size whatever the frame size, so one finish gives both)
        base = rt.finish(feats, _weighted(rt, amap), _weighted(rt, pmap), height, width)
        reference_scores = base.scores
        searched = torch.ones(n, dtype=torch.bool)
        if cfg.lead and math.isfinite(threshold):
            # compared in float64 as the verdict compares a Python float
            searched = reference_scores.detach().double().cpu() > float(threshold)
    if base is not None and not bool(searched.any()):
        return base, embs, reference_scores, searched  # type: ignore[return-value]
    idx = torch.nonzero(searched).flatten()
    if index is None:
        index = ContextIndex()
    index.sync(context)
    scale = rt.scale if has_bank else torch.tensor(1.0)
    sub = idx.to(emb.device)
    q, pq = emb[sub], (pemb[sub] if rt.split_maps else None)
    picks = index.pick(q, cfg)  # the pixel map searches the same frames
    actx, pctx = index.distances(q, pq, picks, cfg)
    k = len(idx)
    fused = fuse(None if amap is None else amap[sub], actx.reshape(k, h, w) / scale, cfg.floor)
    pfused = None
    if rt.split_maps:
        pfused = fuse(pmap[sub], pctx.reshape(k, h, w) / rt.pixel_scale, cfg.floor)  # type: ignore[index, union-attr]
    sub_feats = [f[sub] for f in feats]
    out = rt.finish(sub_feats, _weighted(rt, fused), _weighted(rt, pfused), height, width)
    if base is None:
        return out, embs, out.scores, searched
    scores, maps = base.scores.clone(), base.maps.clone()
    scores[sub], maps[sub] = out.scores.to(scores.dtype), out.maps.to(maps.dtype)
    return AnomalyOutput(scores=scores, maps=maps), embs, reference_scores, searched  # type: ignore[return-value]


def _weighted(rt: CladRuntime, grid: torch.Tensor | None) -> torch.Tensor | None:
    return None if grid is None else rt.w_visual * grid


class LineContext(Generic[T]):
    """Bounded, admission-guarded memory of one product's recent normal-looking frames.

    Stores any payload (the worker: `Embeddings`; the accuracy suite: frame indices).
    One instance per product; never shared, so a product's frames cannot teach another.
    """

    def __init__(self, cfg: ContextConfig | None = None, threshold: float = math.inf) -> None:
        self.cfg = cfg or ContextConfig()
        self.threshold = float(threshold)
        self._frames: deque[tuple[float, T]] = deque(maxlen=self.cfg.max_frames)
        self._normal_scores: deque[float] = deque(maxlen=self.cfg.score_window)
        self._recent_high: deque[bool] = deque(maxlen=self.cfg.drift_window)
        self._recent_scores: deque[float] = deque(maxlen=self.cfg.rank_window)
        self._index: ContextIndex | None = None
        # frames scored with at least min_frames of context: searched / spared by the lead
        self.searched_frames = 0
        self.spared_frames = 0

    def search_index(self) -> ContextIndex:
        """The context's embeddings kept ready for the search (payloads: `Embeddings`)."""
        if self._index is None:
            self._index = ContextIndex(self.cfg.search_precision)
        return self._index

    def __len__(self) -> int:
        return len(self._frames)

    def items(self, now: float) -> list[T]:
        """Payloads of the frames in the context, oldest first, after dropping aged ones."""
        while self._frames and now - self._frames[0][0] > self.cfg.max_age_s:
            self._frames.popleft()
        return [p for _t, p in self._frames]

    def cut(self) -> float:
        """Score under which a frame is admitted."""
        if len(self._normal_scores) < self.cfg.warmup:
            return self.threshold
        s = np.fromiter(self._normal_scores, np.float64)
        med = float(np.median(s))
        mad = max(float(np.median(np.abs(s - med))), self.cfg.min_mad_ratio * abs(med))
        return min(self.threshold, med + self.cfg.admit_mad * mad)

    def offer(self, payload: T, score: float, now: float) -> bool:
        """Record a scored frame; admit it to the context when it scores under the cut
        and in the lower `admit_quantile` of the recent scores. `score` should not depend
        on the context (the worker passes the reference-only image score)."""
        high = bool(score > self.cut())
        self._recent_scores.append(float(score))
        recent = np.fromiter(self._recent_scores, np.float64)
        low_rank = bool(score <= np.quantile(recent, self.cfg.admit_quantile))
        admitted = not high and low_rank
        self._recent_high.append(high)
        if not high:  # the cut's own statistics: a run of high frames cannot move it
            self._normal_scores.append(float(score))
        if admitted:
            self._frames.append((now, payload))
        return admitted

    @property
    def drift(self) -> float:
        """Share of the recent frames (drift_window) that scored above the cut."""
        if not self._recent_high:
            return 0.0
        return sum(self._recent_high) / len(self._recent_high)

    def clear(self) -> None:
        """Forget everything (after a model reload the embeddings no longer match)."""
        self._frames.clear()
        self._normal_scores.clear()
        self._recent_high.clear()
        self._recent_scores.clear()
        self._index = None


@torch.no_grad()
def score_and_offer(
    rt: CladRuntime,
    frames: torch.Tensor,
    line: LineContext[Embeddings],
    now: float,
    stage: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
) -> AnomalyOutput:
    """Score frames against the references and the line's context, then offer each one
    to the context on its reference-only score, which does not move with the context:
    a run of defects is scored, never learnt. What the worker does per batch. The
    line's threshold drives the lead (`score_searched`): with an infinite threshold (the
    evaluation's) every frame is searched."""
    items = line.items(now)
    out, embs, reference, searched = score_searched(
        rt, frames, items, line.cfg, stage, index=line.search_index(), threshold=line.threshold
    )
    if len(items) >= line.cfg.min_frames:
        line.searched_frames += int(searched.sum())
        line.spared_frames += int((~searched).sum())
    for score, emb in zip(reference.tolist(), embs, strict=True):
        line.offer(emb, score, now)
    return out
