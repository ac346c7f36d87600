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
exported graph; `CladRuntime.finish` does the rest exactly as the plain forward.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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


@torch.no_grad()
def score_with_context(
    rt: CladRuntime,
    frames: torch.Tensor,
    context: Sequence[Embeddings],
    cfg: ContextConfig,
    stage: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
) -> tuple[AnomalyOutput, list[Embeddings], torch.Tensor]:
    """Score uint8 NHWC frames against the runtime's bank and the context frames.

    Returns (output, the frames' embeddings, reference-only image scores [N] — the
    admission score; equal to output.scores without context or without a bank's
    fusion). Context distances are divided by the runtime's reference scales, so scores
    keep their meaning (~1 = as normal as the references) and the threshold applies.
    With fewer than `cfg.min_frames` context frames the output equals `rt(frames)`.
    `stage` (engine.runtime.context_stage, e.g. under onnxruntime) replaces the encoder,
    embeddings and reference search; the runtime must then have no text branch.
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
    if len(context) < cfg.min_frames:
        out = rt.finish(feats, _weighted(rt, amap), _weighted(rt, pmap), *frames.shape[1:3])
        return out, embs, out.scores
    reference_scores = None
    if amap is not None:
        size = rt.input_size
        reference_scores = rt.finish(feats, rt.w_visual * amap, None, size, size).scores
    scale = rt.scale if has_bank else torch.tensor(1.0)
    ctx = torch.stack([c.image for c in context])
    picks = pick_frames(emb, ctx, cfg)  # the pixel map searches the same frames
    ctx = context_distances(emb, ctx, cfg, picks).reshape(n, h, w) / scale
    amap = fuse(amap, ctx, cfg.floor)
    if rt.split_maps:
        pctx = context_distances(pemb, torch.stack([c.pixel for c in context]), cfg, picks)
        pmap = fuse(pmap, pctx.reshape(n, h, w) / rt.pixel_scale, cfg.floor)
    out = rt.finish(feats, _weighted(rt, amap), _weighted(rt, pmap), *frames.shape[1:3])
    return out, embs, out.scores if reference_scores is None else reference_scores


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
    a run of defects is scored, never learnt. What the worker does per batch."""
    out, embs, reference = score_with_context(rt, frames, line.items(now), line.cfg, stage)
    for score, emb in zip(reference.tolist(), embs, strict=True):
        line.offer(emb, score, now)
    return out
