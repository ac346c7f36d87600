"""Train the CLAD heads (eq. 6 at image and patch level) on synthetic anomalies.

Encoders stay frozen, so their features are computed once per image view and cached;
an epoch is then a pass over small tensors (minutes on 2 CPU cores). Seeded and
resumable: one checkpoint per epoch, and the epoch order is a function of (seed, epoch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.scoring.heads import CladTextBranch
from engine.scoring.visual_encoder import IMAGENET_MEAN, IMAGENET_STD, VisualEncoder
from engine.training.losses import (
    Decoders,
    class_balanced_weights,
    contrastive_loss,
    reconstruction_loss,
    total_loss,
)
from engine.training.synthetic import augment_normal, synthesize


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 16
    joint_dim: int = 128
    hidden: int = 256
    alpha: float = 0.2  # eq. 3 pull margin (squared L2 of unit vectors, range [0, 4])
    beta: float = 1.0  # eq. 3 push margin
    sigma: float = 1.0  # eq. 4 scale
    tau: float = 0.1  # patch map temperature
    lam: float = 0.1  # eq. 6 weight of the reconstruction term
    normal_views: int = 2  # augmented normal copies per image
    anomaly_views: int = 3  # synthetic-defect copies per image
    patch_anomalous: float = 0.3  # share of a patch covered by the mask to call it anomalous


class FeatureSet(NamedTuple):
    """Cached frozen-encoder features of every training view."""

    feats: list[torch.Tensor]  # per level [N, C, h, w]
    labels: torch.Tensor  # [N] 0 normal / 1 synthetic anomaly
    patch_labels: torch.Tensor  # [N, h, w] 1 / 0, -1 = partly covered (ignored)
    groups: torch.Tensor  # [N] index of the product (prompt set) of each view


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)


def preprocess(frames: np.ndarray) -> torch.Tensor:
    """uint8 NHWC at the input size -> normalised NCHW, as CladRuntime.preprocess does."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def make_views(
    groups: list[list[np.ndarray]], cfg: TrainConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[int]]:
    """(images, masks, labels, group index) of normal and synthetic-anomaly views."""
    images, masks, labels, gidx = [], [], [], []
    for g, imgs in enumerate(groups):
        for i, img in enumerate(imgs):
            donors = [d for j, d in enumerate(imgs) if j != i]
            zero = np.zeros(img.shape[:2], np.uint8)
            for v in range(cfg.normal_views):
                images.append(img if v == 0 else augment_normal(img, rng))
                masks.append(zero)
                labels.append(0)
                gidx.append(g)
            for _ in range(cfg.anomaly_views):
                out, mask, _ = synthesize(augment_normal(img, rng), rng, donors)
                images.append(out)
                masks.append(mask)
                labels.append(1)
                gidx.append(g)
    return images, masks, labels, gidx


@torch.no_grad()
def extract_features(
    encoder: VisualEncoder,
    groups: list[list[np.ndarray]],
    cfg: TrainConfig,
    batch: int = 8,
    progress: bool = True,
) -> FeatureSet:
    """Synthesise the views (seeded) and run the frozen encoder over them once."""
    rng = np.random.default_rng(cfg.seed)
    images, masks, labels, gidx = make_views(groups, cfg, rng)
    levels: list[list[torch.Tensor]] = []
    for i in tqdm(range(0, len(images), batch), desc="features", disable=not progress):
        levels.append(encoder.forward_features(preprocess(np.stack(images[i : i + batch]))))
    feats = [torch.cat([b[k] for b in levels]) for k in range(len(levels[0]))]
    h, w = feats[0].shape[-2:]
    m = torch.from_numpy(np.stack(masks)).float().unsqueeze(1)
    cover = F.adaptive_avg_pool2d(m, (h, w)).squeeze(1)
    patch = torch.where(cover >= cfg.patch_anomalous, 1, torch.where(cover > 0, -1, 0))
    return FeatureSet(feats, torch.tensor(labels), patch.to(torch.int8), torch.tensor(gidx))


def prototypes(branch: CladTextBranch, texts: list[tuple[torch.Tensor, torch.Tensor]]):
    """Normal and defect prototypes per product: two [G, D] tensors (gradient flows)."""
    zn = [F.normalize(branch.project_text(n).mean(0), dim=-1) for n, _ in texts]
    zd = [F.normalize(branch.project_text(d).mean(0), dim=-1) for _, d in texts]
    return torch.stack(zn), torch.stack(zd)


def clad_loss(
    branch: CladTextBranch,
    dec: Decoders,
    feats: list[torch.Tensor],
    labels: torch.Tensor,
    patch_labels: torch.Tensor,
    groups: torch.Tensor,
    texts: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    """Eq. 6 = eq. 3 at image level + eq. 3 at patch level + λ·eq. 7."""
    emb = branch.embed(feats)
    zn, zd = prototypes(branch, texts)
    anom = labels.bool().unsqueeze(1)
    pos = torch.where(anom, zd[groups], zn[groups])
    neg = torch.where(anom, zn[groups], zd[groups])
    l_img = contrastive_loss(emb.image, pos, neg, cfg.alpha, cfg.beta)
    d = emb.patch.shape[1]
    zp = emb.patch.permute(0, 2, 3, 1).reshape(-1, d)
    pl = patch_labels.reshape(-1).long()
    pg = groups.view(-1, 1, 1).expand_as(patch_labels).reshape(-1)
    keep = pl >= 0
    zp, pl, pg = zp[keep], pl[keep], pg[keep]
    pa = pl.bool().unsqueeze(1)
    ppos = torch.where(pa, zd[pg], zn[pg])
    pneg = torch.where(pa, zn[pg], zd[pg])
    l_patch = contrastive_loss(zp, ppos, pneg, cfg.alpha, cfg.beta, class_balanced_weights(pl))
    raw_text = torch.cat([torch.cat(t) for t in texts])
    rec = reconstruction_loss(
        [dec.patch(emb.patch), dec.image(emb.image), dec.text(branch.project_text(raw_text))],
        [emb.patch_in, emb.pooled_in, raw_text],
    )
    parts = total_loss(l_img + l_patch, rec, cfg.lam)
    return {"total": parts.total, "image": l_img, "patch": l_patch, "reconstruction": rec}


def config_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def _pass(
    branch: CladTextBranch,
    dec: Decoders,
    data: FeatureSet,
    texts: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    opt: torch.optim.Optimizer | None,
    epoch: int,
) -> dict[str, float]:
    """One epoch (opt given) or one evaluation pass (opt None); mean losses per view."""
    n = len(data.labels)
    branch.train(opt is not None)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    sums: dict[str, float] = {}
    for i in range(0, n, cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        with torch.set_grad_enabled(opt is not None):
            losses = clad_loss(branch, dec, [f[idx] for f in data.feats], data.labels[idx],
                               data.patch_labels[idx], data.groups[idx], texts, cfg)  # fmt: skip
        if opt is not None:
            opt.zero_grad()
            losses["total"].backward()
            opt.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx) / n
    return sums


def train_heads(
    data: FeatureSet,
    texts: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    ckpt: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[CladTextBranch, History]:
    """Fit the projection heads; `texts[g]` = (normal, defect) prompt embeddings of product g."""
    torch.manual_seed(cfg.seed)
    c_in = sum(f.shape[1] for f in data.feats)
    branch = CladTextBranch(c_in, texts[0][0], texts[0][1], cfg.joint_dim, cfg.hidden,
                            cfg.sigma, cfg.tau)  # fmt: skip
    dec = Decoders(cfg.joint_dim, c_in, 2 * c_in, texts[0][0].shape[1], cfg.hidden)
    opt = torch.optim.AdamW([*branch.parameters(), *dec.parameters()], lr=cfg.lr, weight_decay=1e-4)
    hist, start = History(), 0
    if resume and ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        # a longer run (--epochs) may resume; any other change would mix two trainings
        if {**state["config"], "epochs": cfg.epochs} != asdict(cfg):
            raise ValueError(f"checkpoint {ckpt} was written with another training config")
        branch.load_state_dict(state["branch"])
        dec.load_state_dict(state["decoders"])
        opt.load_state_dict(state["optimizer"])
        hist, start = History(state["history"]), int(state["epoch"]) + 1
    if start == 0:  # the loss of the untrained heads: the reference "training lowers it"
        hist.epochs.append({"epoch": -1, **_pass(branch, dec, data, texts, cfg, None, -1)})
    bar = tqdm(range(start, cfg.epochs), desc="epochs", disable=not progress, initial=start,
               total=cfg.epochs)  # fmt: skip
    for epoch in bar:
        sums = _pass(branch, dec, data, texts, cfg, opt, epoch)
        hist.epochs.append({"epoch": epoch, **sums})
        bar.set_postfix(loss=f"{sums['total']:.4f}")
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            state = {"epoch": epoch, "config": asdict(cfg), "branch": branch.state_dict(),
                     "decoders": dec.state_dict(), "optimizer": opt.state_dict(),
                     "history": hist.epochs}  # fmt: skip
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)  # an interrupted save keeps the last one
    branch.eval()
    return branch, hist
