"""Region-conditioned descriptions: which defect kind of the product's vocabulary a region is.

The frame's patch embeddings (the runtime encoder's, `patch_embeddings`) are pooled
with the region as a soft mask, AlphaCLIP-style: an "alpha" conv of the mask is
added to the features before pooling (the new mask path, zero-initialised so an
untuned describer is plain masked pooling), then projected into the text space.
Vocabulary phrasings (MiniLM) are projected by the text head (+ a LoRA update);
kinds are scored by cosine to their phrasing prototype, softmax -> confidence.

Inference only; training lives in engine.training.describer_train.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.defects.defect_kinds import UNCLEAR, UNCLEAR_TEXT, kind_group
from engine.scoring.runtime_model import patch_embeddings

N_STATS = 7


class KindDescriber(Protocol):
    """What the describing calls need: RegionDescriber (patch embeddings + text) and the
    default describer's engine.defects.shape_describer.ShapeDescriber (pixels + a forest)."""

    joint_dim: int
    vocab_owner: torch.Tensor

    def eval(self) -> Any: ...
    def region_embeddings(self, patch_emb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor: ...
    def kind_probabilities(self, emb: torch.Tensor) -> torch.Tensor: ...
    def phrase_scores(self, emb: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Description:
    kind: str
    text: str
    confidence: float  # softmax over the product's kinds
    runner_up_kind: str | None
    runner_up: str | None
    runner_up_confidence: float | None
    embedding: np.ndarray = field(compare=False, repr=False)  # unit-norm, for cache keys
    # the likeliest group of kinds (defect_kinds.KIND_GROUPS): its share, its two likeliest
    # kinds' phrasings as one ("a scratch or a cut") and the likeliest of them; what a
    # region says when its kind is not sure enough but its group is (mark_unclear)
    group_confidence: float | None = field(default=None, compare=False)
    group_text: str | None = field(default=None, compare=False)
    group_kind: str | None = field(default=None, compare=False)


def mask_stats(masks: torch.Tensor) -> torch.Tensor:
    """Shape and position of each region [N, H, W] -> [N, 7]: what the alpha channel sees
    beyond the pooled features (a break sits at an edge, a crack is long and thin)."""
    n, h, w = masks.shape
    m = masks.float()
    area = m.sum(dim=(1, 2)).clamp_min(1.0)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    rows, cols = m.amax(dim=2) > 0, m.amax(dim=1) > 0  # [N, H], [N, W]
    big = torch.tensor(1e9)
    y0 = torch.where(rows, ys.view(1, h), big).amin(1)
    y1 = torch.where(rows, ys.view(1, h), -big).amax(1)
    x0 = torch.where(cols, xs.view(1, w), big).amin(1)
    x1 = torch.where(cols, xs.view(1, w), -big).amax(1)
    bw, bh = (x1 - x0 + 1).clamp_min(1), (y1 - y0 + 1).clamp_min(1)
    cy = (m * ys).sum(dim=(1, 2)) / area / h
    cx = (m * xs).sum(dim=(1, 2)) / area / w
    edge = torch.stack([x0 / w, y0 / h, (w - 1 - x1) / w, (h - 1 - y1) / h], 1).amin(1)
    return torch.stack([torch.log(area / (h * w)), bw / w, bh / h, area / (bw * bh),
                        cx, cy, edge.clamp_min(0)], dim=1)  # fmt: skip


class RegionDescriber(nn.Module):
    """Masked region embedding + projected vocabulary; forward -> kind logits [N, K]."""

    def __init__(
        self, in_channels: int, text_dim: int, vocab_text: torch.Tensor, vocab_owner: list[int],
        joint_dim: int = 128, hidden: int = 256, rank: int = 8, tau: float = 0.07,
        grid: int = 20, relative: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_channels, self.text_dim, self.joint_dim = in_channels, text_dim, joint_dim
        self.hidden, self.rank, self.tau, self.grid = hidden, rank, tau, grid
        # relative: features minus those of the region's surroundings, so what is learned
        # is how a defect differs from its product, not the product (the default describer)
        self.relative = relative
        # pretrained group (copied from a trained CLAD text branch when there is one)
        self.image_proj = nn.Sequential(
            nn.Linear(2 * in_channels, hidden), nn.GELU(), nn.Linear(hidden, joint_dim)
        )
        self.text_proj = nn.Linear(text_dim, joint_dim)
        # new group: mask path, region adapter, LoRA on the text head
        self.alpha_conv = nn.Conv2d(1, in_channels, 3, padding=1)
        self.adapter = nn.Sequential(
            nn.Linear(3 * in_channels + N_STATS, hidden), nn.GELU(), nn.Linear(hidden, joint_dim)
        )
        self.lora_a = nn.Linear(text_dim, rank, bias=False)
        self.lora_b = nn.Linear(rank, joint_dim, bias=False)
        for zero in (self.alpha_conv, self.adapter[-1], self.lora_b):
            nn.init.zeros_(zero.weight)
            if getattr(zero, "bias", None) is not None:
                nn.init.zeros_(zero.bias)
        self.set_vocabulary(vocab_text, vocab_owner)

    def set_vocabulary(self, vocab_text: torch.Tensor, vocab_owner: list[int]) -> None:
        """Phrasing embeddings [P, T] of the text encoder and the kind index of each."""
        self.register_buffer("vocab_text", vocab_text.float().clone())
        self.register_buffer("vocab_owner", torch.as_tensor(vocab_owner, dtype=torch.long))
        self.n_kinds = int(self.vocab_owner.max()) + 1

    def config(self) -> dict[str, int | float]:
        return {"in_channels": self.in_channels, "text_dim": self.text_dim,
                "joint_dim": self.joint_dim, "hidden": self.hidden, "rank": self.rank,
                "tau": self.tau, "grid": self.grid, "relative": self.relative,
                "n_phrases": int(self.vocab_text.shape[0])}  # fmt: skip

    def new_parameters(self) -> list[nn.Parameter]:
        mods = (self.alpha_conv, self.adapter, self.lora_a, self.lora_b)
        return [p for m in mods for p in m.parameters()]

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [*self.image_proj.parameters(), *self.text_proj.parameters()]

    def region_embeddings(self, patch_emb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """patch_emb [N, C, h, w] (one row per region) + masks [N, H, W] -> unit-norm [N, D]."""
        patch_emb = pool_grid(patch_emb, self.grid)
        h, w = patch_emb.shape[-2:]
        full = masks.float()
        m = F.adaptive_avg_pool2d(full.unsqueeze(1), (h, w))  # [N, 1, h, w] coverage
        if self.relative:
            patch_emb = patch_emb - surroundings(patch_emb, m)
        x = patch_emb + self.alpha_conv(m)
        weight = m / m.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        mean = (x * weight).sum(dim=(2, 3))
        inside = m > 0
        # a region smaller than a patch still touches one: fall back to the peak-coverage patch
        inside = inside | (m >= m.amax(dim=(2, 3), keepdim=True))
        peak = x.masked_fill(~inside, float("-inf")).amax(dim=(2, 3))
        pooled = torch.cat([mean, peak], dim=1)
        context = torch.cat([pooled, patch_emb.mean(dim=(2, 3)), mask_stats(full)], dim=1)
        z = F.normalize(self.image_proj(pooled), dim=-1) + self.adapter(context)
        return F.normalize(z, dim=-1)

    def text_embeddings(self, text: torch.Tensor | None = None) -> torch.Tensor:
        t = self.vocab_text if text is None else text
        return F.normalize(self.text_proj(t) + self.lora_b(self.lora_a(t)), dim=-1)

    def kind_prototypes(self) -> torch.Tensor:
        """[K, D]: mean of each kind's projected phrasings, renormalised."""
        t = self.text_embeddings()
        protos = torch.zeros(self.n_kinds, t.shape[1]).index_add_(0, self.vocab_owner, t)
        return F.normalize(protos, dim=-1)

    def kind_probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        """Region embeddings [N, D] -> softmax over the kinds [N, K]."""
        return (emb @ self.kind_prototypes().T / self.tau).softmax(dim=1)

    def phrase_scores(self, emb: torch.Tensor) -> torch.Tensor:
        """[N, P] cosine of each region to each phrasing (the closest one is the text)."""
        return emb @ self.text_embeddings().T

    def forward(self, patch_emb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.region_embeddings(patch_emb, masks) @ self.kind_prototypes().T / self.tau


def surroundings(patch_emb: torch.Tensor, coverage: torch.Tensor, ring: int = 2) -> torch.Tensor:
    """Mean embedding [N, C, 1, 1] of a ring of `ring` cells around each region (all
    cells outside it when the region fills the frame)."""
    inside = (coverage > 0).float()
    around = (F.max_pool2d(inside, 2 * ring + 1, stride=1, padding=ring) - inside).clamp_min(0)
    empty = around.sum(dim=(2, 3), keepdim=True) == 0
    weight = torch.where(empty, 1 - inside, around)
    total = weight.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (patch_emb * weight).sum(dim=(2, 3), keepdim=True) / total


def pool_grid(patch_emb: torch.Tensor, grid: int) -> torch.Tensor:
    """Average the patch grid down to at most grid x grid: 4x less work per region at
    20 vs 40 (CPU workers), and the 3x3-pooled embeddings are smooth at that scale."""
    h, w = patch_emb.shape[-2:]
    if h <= grid and w <= grid:
        return patch_emb
    return F.adaptive_avg_pool2d(patch_emb, (min(h, grid), min(w, grid)))


def frame_patch_embeddings(
    encoder: nn.Module, preprocess: nn.Module, frames: torch.Tensor, pool: int = 3
) -> torch.Tensor:
    """uint8 NHWC frames -> the runtime's patch embeddings [N, C, h, w] (no gradient)."""
    with torch.no_grad():
        return patch_embeddings(encoder.forward_features(preprocess(frames)), pool)


@torch.no_grad()
def embed_regions(
    describer: KindDescriber, patch_emb: torch.Tensor, masks: np.ndarray | torch.Tensor
) -> torch.Tensor:
    """Region embeddings [R, D] of ONE frame: patch_emb [1, C, h, w], masks [R, H, W]."""
    masks_t = torch.as_tensor(np.asarray(masks, dtype=bool))
    if masks_t.shape[0] == 0:
        return torch.zeros(0, describer.joint_dim)
    describer.eval()
    return describer.region_embeddings(patch_emb.expand(masks_t.shape[0], -1, -1, -1), masks_t)


@torch.no_grad()
def search_descriptions(
    describer: KindDescriber, emb: torch.Tensor, kinds: list[str], phrases: list[str]
) -> list[Description]:
    """The text search: best kind (+ its closest phrasing), runner-up, softmax confidences.
    Split from embedding so a cache keyed by the embedding can skip it."""
    if emb.shape[0] == 0:
        return []
    probs = describer.kind_probabilities(emb)
    phrase_sim = describer.phrase_scores(emb)
    owner = describer.vocab_owner
    out = []
    for r in range(emb.shape[0]):
        order = torch.argsort(probs[r], descending=True).tolist()

        def text_of(k: int, r: int = r) -> str:
            idx = torch.nonzero(owner == k).flatten()
            return phrases[int(idx[phrase_sim[r, idx].argmax()])]

        best, second = order[0], (order[1] if len(order) > 1 else None)
        group = _likeliest_group(order, probs[r], kinds)
        out.append(Description(
            kind=kinds[best], text=text_of(best), confidence=float(probs[r, best]),
            runner_up_kind=kinds[second] if second is not None else None,
            runner_up=text_of(second) if second is not None else None,
            runner_up_confidence=float(probs[r, second]) if second is not None else None,
            embedding=emb[r].numpy().copy(),
            group_confidence=float(probs[r, group].sum()),
            group_text=hedged_text([text_of(k) for k in group[:2]]),
            group_kind=kinds[group[0]],
        ))  # fmt: skip
    return out


def _likeliest_group(order: list[int], probs: torch.Tensor, kinds: list[str]) -> list[int]:
    """The kinds of the group with the largest share, likeliest first (kinds with no
    share left out, the likeliest always kept)."""
    members: dict[str, list[int]] = {}
    for k in order:  # likeliest first, so each group's list is in that order too
        members.setdefault(kind_group(kinds[k]), []).append(k)
    best = max(members.values(), key=lambda ks: float(probs[ks].sum()))
    return [k for i, k in enumerate(best) if i == 0 or float(probs[k]) > 0]


HEDGE = " or "  # joins a group answer's two phrasings


def hedged_text(phrases: list[str]) -> str:
    """Two kinds' phrasings as one description: "a scratch or a cut"."""
    return HEDGE.join(phrases)


def mark_unclear(descriptions: list[Description], below: float | None,
                 group_below: float | None = None) -> list[Description]:  # fmt: skip
    """A description less confident than `below` names its likeliest group of kinds
    instead ("a scratch or a cut") when that group's share reaches `group_below`, else
    it becomes "unclear defect" (a wrong word costs an operator's trust more than no
    word). Either way the best single kind stays as runner-up, at its own confidence."""
    if below is None:
        return descriptions
    return [d if d.confidence >= below else _fallback(d, group_below) for d in descriptions]


def _fallback(d: Description, group_below: float | None) -> Description:
    best = {"runner_up_kind": d.kind, "runner_up": d.text, "runner_up_confidence": d.confidence}
    if (group_below is not None and d.group_confidence is not None
            and d.group_confidence >= group_below and d.group_text and d.group_kind):  # fmt: skip
        return replace(d, kind=d.group_kind, text=d.group_text, confidence=d.group_confidence,
                       **best)  # fmt: skip
    return replace(d, kind=UNCLEAR, text=UNCLEAR_TEXT, **best)


def describe_regions(
    describer: KindDescriber, patch_emb: torch.Tensor, masks: np.ndarray | torch.Tensor,
    kinds: list[str], phrases: list[str], unclear_below: float | None = None,
    group_below: float | None = None,
) -> list[Description]:  # fmt: skip
    """Describe every region of ONE frame (embedding, the text search, the unclear cut)."""
    found = search_descriptions(describer, embed_regions(describer, patch_emb, masks), kinds,
                                phrases)  # fmt: skip
    return mark_unclear(found, unclear_below, group_below)
