"""Build a CladRuntime from K reference images of one product (k-shot memory bank)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.scoring.memory_bank import Metric, greedy_coreset
from engine.scoring.runtime_model import CladRuntime, patch_embeddings
from engine.scoring.visual_encoder import Backbone, VisualEncoder


class ScoringConfig(BaseModel):
    """Everything that decides a score; stored with the model, never read from env."""

    model_config = ConfigDict(frozen=True)

    backbone: Backbone = "efficientnet-lite0"
    input_size: int = 320
    # block group 4 only (stride 16, 112 ch on lite0): measured on mvtec-sample 1-shot,
    # adding the stride-8 group makes the image score follow print/texture jitter
    # (capsule 75.0 -> 50.0, grid 90.9 -> 81.8 image AUROC); see engine/scoring/NOTES.md
    stages: tuple[int, ...] = (4,)
    pool: int = 3
    # the pixel map from unpooled embeddings (own bank), the image score from pooled ones:
    # mvtec-sample 1-shot pixel AUROC grid 86.1 -> 92.5, image scores unchanged (NOTES);
    # None = one map for both
    pixel_pool: int | None = 1
    metric: Metric = "cosine"
    topk_ratio: float = 0.01  # image score = mean of the top 1% map pixels
    sigma: float = 4.0  # Gaussian smoothing of the map, pixels at input_size
    # reference augmentation: sub-patch shifts (pixels at input_size) and small
    # rotations cover the pose/print jitter one reference cannot show
    aug_shifts: tuple[int, ...] = (-4, 4)
    aug_rotations: tuple[float, ...] = (-5.0, 5.0)
    aug_flips: bool = False
    max_bank: int = 20000  # above this the bank is reduced by greedy core-set
    coreset_ratio: float = 0.25
    # the greedy core-set picks from a random subset of this many patches: it keeps
    # "every train image" (hundreds of thousands of patches) to minutes; banks under
    # max_bank (K <= 4 with the default augmentation) are not touched
    coreset_candidates: int | None = 80000
    # share of the bank kept by the same greedy core-set at any size (1 = all): the
    # references' shifted views are near-duplicates, so a quarter of the rows searches
    # ~4x faster at the same accuracy: every suite mean row within 0.4 points or up
    # (K=1 online context 86.4 / 90.2 -> 86.4 / 90.4, K=4 87.4 / 90.2 -> 87.9 / 90.6;
    # engine/runtime/NOTES.md, session 8). Models saved before this field kept all rows
    bank_share: float = Field(0.25, gt=0.0, le=1.0)
    w_visual: float = 1.0
    w_text_pixel: float = 0.0
    w_text_image: float = 0.0
    batch_size: int = 8
    seed: int = 0

    @classmethod
    def from_stored(cls, stored: dict) -> ScoringConfig:
        """A saved model's config: one saved before `bank_share` existed kept every row."""
        return cls.model_validate({"bank_share": 1.0, **stored})


def augment_views(img: np.ndarray, cfg: ScoringConfig) -> list[np.ndarray]:
    """The reference itself plus its shifted, rotated and flipped copies (uint8 HWC)."""
    h, w = img.shape[:2]
    views = [img]
    params = [(dx, dy, 0.0) for dx in (0, *cfg.aug_shifts) for dy in (0, *cfg.aug_shifts)]
    params = params[1:] + [(0, 0, a) for a in cfg.aug_rotations]
    for dx, dy, ang in params:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
        m[:, 2] += (dx, dy)
        views.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101))
    if cfg.aug_flips:
        views += [np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(img[::-1])]
    return views


def resize_to(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC image area-resized to size x size (unchanged when it already is)."""
    if img.shape[:2] == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def _embed(
    rt: CladRuntime, views: list[np.ndarray], batch: int, pools: tuple[int, ...]
) -> list[torch.Tensor]:
    """Patch embeddings [M, C] of the views, one bank per pooling size."""
    out: list[list[torch.Tensor]] = [[] for _ in pools]
    for i in range(0, len(views), batch):
        x = torch.from_numpy(np.stack(views[i : i + batch]))
        feats = rt.encoder.forward_features(rt.preprocess(x))
        for acc, pool in zip(out, pools, strict=True):
            emb = patch_embeddings(feats, pool)
            acc.append(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]))
    return [torch.cat(acc) for acc in out]


def build_runtime(
    reference_images: list[np.ndarray],
    config: ScoringConfig | None = None,
    text_branch: torch.nn.Module | None = None,
    encoder: VisualEncoder | None = None,
) -> CladRuntime:
    """k-shot runtime: memory bank from the (augmented) references, score scale from
    held-out views of them. No references -> text-only model (needs `text_branch`)."""
    cfg = config or ScoringConfig()
    enc = encoder or VisualEncoder(cfg.backbone, cfg.stages)
    dim = sum(enc.channels)
    kwargs = dict(
        input_size=cfg.input_size, pool=cfg.pool, metric=cfg.metric, topk_ratio=cfg.topk_ratio,
        sigma=cfg.sigma, text_branch=text_branch, w_visual=cfg.w_visual,
        w_text_pixel=cfg.w_text_pixel, w_text_image=cfg.w_text_image,
        pixel_pool=cfg.pixel_pool,
    )  # fmt: skip
    split = cfg.pixel_pool is not None and cfg.pixel_pool != cfg.pool
    if not reference_images:
        if text_branch is None:
            raise ValueError("0 references and no text branch: needs a trained model")
        return CladRuntime(enc, torch.zeros(0, dim), 1.0, **kwargs)
    refs = [resize_to(r, cfg.input_size) for r in reference_images]
    rt = CladRuntime(enc, torch.zeros(1, dim), 1.0, **kwargs)
    pools = (cfg.pool, cfg.pixel_pool) if split else (cfg.pool,)
    banks = select_bank(_embed(rt, bank_views(refs, cfg), cfg.batch_size, pools), cfg)
    rt.bank = banks[0].contiguous()
    if split:
        rt.pixel_bank = banks[1].contiguous()
    image_scale, pixel_scale = reference_scale(rt, refs, cfg)
    rt.scale.fill_(image_scale)
    rt.pixel_scale.fill_(pixel_scale)
    return rt


def bank_views(refs: list[np.ndarray], cfg: ScoringConfig) -> list[np.ndarray]:
    """Every view the memory bank is built from: each reference and its augmented copies."""
    return [v for r in refs for v in augment_views(r, cfg)]


def bank_rows(bank: torch.Tensor, cfg: ScoringConfig) -> torch.Tensor | None:
    """Indices of the rows of `bank` [M, C] kept by one greedy core-set: cfg.max_bank
    above it, cfg.bank_share of the rows; None when every row is kept."""
    rows = bank.shape[0]
    keep = rows
    if rows > cfg.max_bank:
        keep = min(cfg.max_bank, max(1, math.ceil(cfg.coreset_ratio * rows)))
    keep = min(keep, max(1, math.ceil(cfg.bank_share * rows)))
    if keep >= rows:
        return None
    return greedy_coreset(bank, keep, seed=cfg.seed, max_candidates=cfg.coreset_candidates)


def select_bank(banks: list[torch.Tensor], cfg: ScoringConfig,
                rows_from: torch.Tensor | None = None) -> list[torch.Tensor]:  # fmt: skip
    """The banks ([M, C] per pooling size) cut to the rows `bank_rows` picks on
    `rows_from` (the same patches embedded another way, e.g. by the FP32 graph for an
    INT8 bank), or on the first bank."""
    idx = bank_rows(banks[0] if rows_from is None else rows_from, cfg)
    return banks if idx is None else [b[idx] for b in banks]


def held_out_views(refs: list[np.ndarray], cfg: ScoringConfig) -> list[np.ndarray]:
    """One view per reference with a shift and rotation not in the bank (half a shift
    step, 2 degrees): what a normal frame of the line looks like to the bank."""
    rng = np.random.default_rng(cfg.seed)
    held = []
    for r in refs:
        h, w = r.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.choice([-2.0, 2.0])), 1.0)
        m[:, 2] += rng.choice([-2, 2], size=2)
        held.append(cv2.warpAffine(r, m, (w, h), borderMode=cv2.BORDER_REFLECT_101))
    return held


def scale_statistics(
    scores: torch.Tensor, maps: torch.Tensor, topk: int, w_visual: float
) -> tuple[float, float]:
    """(image scale, pixel scale) from the held-out views' unscaled scores and maps: the
    mean image score, and the mean of each map's top pixels."""
    top = maps.reshape(maps.shape[0], -1).topk(topk, dim=1).values.mean(dim=1)
    w = max(w_visual, 1e-6)
    return max(float(scores.mean()) / w, 1e-6), max(float(top.mean()) / w, 1e-6)


@torch.no_grad()
def reference_scale(
    rt: CladRuntime, refs: list[np.ndarray], cfg: ScoringConfig
) -> tuple[float, float]:
    """Mean image score of held-out views of the references against the bank, and the
    same statistic (mean of the top pixels) of their pixel maps.

    Dividing by it makes ~1 mean "as normal as the references" on every product.
    Visual term only: the text term is absolute.
    """
    held = held_out_views(refs, cfg)
    text, rt.text_branch = rt.text_branch, None
    try:
        rt.scale.fill_(1.0)
        rt.pixel_scale.fill_(1.0)
        outs = [rt(torch.from_numpy(np.stack(held[i : i + 8]))) for i in range(0, len(held), 8)]
    finally:
        rt.text_branch = text
    scores = torch.cat([o.scores for o in outs])
    maps = torch.cat([o.maps for o in outs])
    return scale_statistics(scores, maps, rt.topk, cfg.w_visual)
