"""CLAD training objective: margin contrastive loss (eq. 3) + λ·reconstruction (eq. 6-7).

Training-only: nothing in the runtime path imports this module.
Distances are squared L2 between embeddings (unit-norm in CLAD, so they lie in [0, 4]).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class LossParts(NamedTuple):
    total: torch.Tensor
    contrastive: torch.Tensor
    reconstruction: torch.Tensor


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise squared L2 distance ||a_i - b_i||² of two [N, D] tensors."""
    return (a - b).pow(2).sum(dim=-1)


def contrastive_loss(
    z_v: torch.Tensor,
    z_pos: torch.Tensor,
    z_neg: torch.Tensor,
    alpha: float,
    beta: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 3 per pair: [||z_v - z_pos||² - α]_+ + [β - ||z_v - z_neg||²]_+, averaged.

    z_pos is the text of the sample's own class (normal image <-> normal text, anomalous
    image <-> defect text); z_neg is the text of the other class, the paper's "different
    instance" j ≠ i. All are [N, D]; ``weight`` [N] (summing to 1) replaces the plain mean,
    which the patch level uses to balance the rare anomalous patches against the normal ones.
    """
    pull = F.relu(sq_dist(z_v, z_pos) - alpha)
    push = F.relu(beta - sq_dist(z_v, z_neg))
    per = pull + push
    if weight is None:
        return per.mean()
    return (per * weight).sum()


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Weights [N] summing to 1 with each present class carrying the same total weight."""
    w = torch.zeros_like(labels, dtype=torch.float32)
    classes = labels.unique()
    for c in classes:
        sel = labels == c
        w[sel] = 1.0 / (sel.sum() * len(classes))
    return w


class Decoders(nn.Module):
    """Light decoders f_v⁻¹, f_t⁻¹ of eq. 7 (training-only; dropped from the saved model).

    Reconstructing the encoders' *features* (not pixels or tokens) from the joint embedding
    keeps the projection from collapsing onto the two text prototypes: it must retain what
    the frozen encoders saw.
    """

    def __init__(
        self, joint_dim: int, visual_dim: int, pooled_dim: int, text_dim: int, hidden: int = 256
    ) -> None:
        super().__init__()
        self.patch = nn.Sequential(
            nn.Conv2d(joint_dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, visual_dim, 1)
        )
        self.image = nn.Sequential(
            nn.Linear(joint_dim, hidden), nn.GELU(), nn.Linear(hidden, pooled_dim)
        )
        self.text = nn.Linear(joint_dim, text_dim)


def reconstruction_loss(recon: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 7: per modality, ||f⁻¹(z) - x||² averaged over vectors; summed over modalities.

    Features lie along dim 1 ([N, C] or [N, C, h, w]); squared L2 per vector (not a per
    element mean) keeps the term on the scale the paper writes, independent of C.
    """
    total = recon[0].new_zeros(())
    for r, t in zip(recon, targets, strict=True):
        total = total + (r - t).pow(2).sum(dim=1).mean()
    return total


def total_loss(contrastive: torch.Tensor, reconstruction: torch.Tensor, lam: float) -> LossParts:
    """Eq. 6: L = L_contrastive + λ·L_reconstruction."""
    return LossParts(contrastive + lam * reconstruction, contrastive, reconstruction)
