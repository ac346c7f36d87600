"""CLAD projection heads: the text branch the runtime module calls (runtime_model.TextBranch).

Visual features (frozen encoder) and text embeddings (frozen encoder, precomputed for the
product's prompts and kept as buffers) are projected into one unit-norm joint space:
- image level: eq. 4, S = exp(-||z_v - z_t(normal)||² / σ); anomaly = 1 - S;
- patch level: each patch embedding against the normal and defect prototypes,
  p = sigmoid((||z_p - z_n||² - ||z_p - z_d||²) / τ).
The runtime never needs the text encoder, and the module exports to ONNX as plain ops.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from engine.scoring.runtime_model import patch_embeddings


class JointEmbeddings(NamedTuple):
    """Everything training needs from one forward pass (runtime uses only forward())."""

    patch: torch.Tensor  # [N, D, h, w] unit-norm patch embeddings
    image: torch.Tensor  # [N, D] unit-norm global embedding
    patch_in: torch.Tensor  # [N, C, h, w] head input (reconstruction target)
    pooled_in: torch.Tensor  # [N, 2C] pooled head input (reconstruction target)


def _mlp_conv(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.GELU(), nn.Conv2d(hidden, c_out, 1))


class CladTextBranch(nn.Module):
    """Projection heads + prompt embeddings; forward(features) -> (image, patch) anomaly."""

    def __init__(
        self,
        in_channels: int,
        text_normal: torch.Tensor,
        text_defect: torch.Tensor,
        joint_dim: int = 128,
        hidden: int = 256,
        sigma: float = 1.0,
        tau: float = 0.1,
        pool: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels, self.joint_dim, self.hidden, self.pool = (
            in_channels,
            joint_dim,
            hidden,
            pool,
        )
        self.sigma, self.tau = sigma, tau
        text_dim = int(text_normal.shape[-1])
        self.text_dim = text_dim
        self.patch_proj = _mlp_conv(in_channels, hidden, joint_dim)
        # global input = [mean, max] of the patch inputs: the max keeps a small defect visible
        self.image_proj = nn.Sequential(
            nn.Linear(2 * in_channels, hidden), nn.GELU(), nn.Linear(hidden, joint_dim)
        )
        self.text_proj = nn.Linear(text_dim, joint_dim)
        # one row per prompt of the ensemble; the prototype is their projected mean
        self.register_buffer("text_normal", text_normal.float().clone())
        self.register_buffer("text_defect", text_defect.float().clone())

    def config(self) -> dict[str, float | int]:
        """Constructor arguments (besides the prompt buffers) for artefacts.py."""
        return {
            "in_channels": self.in_channels,
            "joint_dim": self.joint_dim,
            "hidden": self.hidden,
            "sigma": self.sigma,
            "tau": self.tau,
            "pool": self.pool,
            "text_dim": self.text_dim,
            "n_normal": int(self.text_normal.shape[0]),
            "n_defect": int(self.text_defect.shape[0]),
        }

    def project_text(self, text: torch.Tensor) -> torch.Tensor:
        """Text encoder embeddings [P, T] -> unit-norm joint embeddings [P, D]."""
        return F.normalize(self.text_proj(text), dim=-1)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normal and defect prototypes [D]: mean of the projected prompt ensemble, renormalised."""
        z_n = F.normalize(self.project_text(self.text_normal).mean(dim=0), dim=-1)
        z_d = F.normalize(self.project_text(self.text_defect).mean(dim=0), dim=-1)
        return z_n, z_d

    def embed(self, features: list[torch.Tensor]) -> JointEmbeddings:
        x = patch_embeddings(features, self.pool)
        z_p = F.normalize(self.patch_proj(x), dim=1)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        z_i = F.normalize(self.image_proj(pooled), dim=-1)
        return JointEmbeddings(z_p, z_i, x, pooled)

    def score(self, emb: JointEmbeddings) -> tuple[torch.Tensor, torch.Tensor]:
        z_n, z_d = self.prototypes()
        d_img = (emb.image - z_n).pow(2).sum(dim=-1)
        image_anomaly = 1.0 - torch.exp(-d_img / self.sigma)  # eq. 4, higher = worse
        zn = z_n.view(1, -1, 1, 1)
        zd = z_d.view(1, -1, 1, 1)
        d_n = (emb.patch - zn).pow(2).sum(dim=1)
        d_d = (emb.patch - zd).pow(2).sum(dim=1)
        patch_anomaly = torch.sigmoid((d_n - d_d) / self.tau)
        return image_anomaly, patch_anomaly

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(self.embed(features))


def branch_from_config(config: dict[str, float | int]) -> CladTextBranch:
    """An empty branch of the saved shape, ready for load_state_dict (buffers included)."""
    td = int(config["text_dim"])
    return CladTextBranch(
        in_channels=int(config["in_channels"]),
        text_normal=torch.zeros(int(config["n_normal"]), td),
        text_defect=torch.zeros(int(config["n_defect"]), td),
        joint_dim=int(config["joint_dim"]),
        hidden=int(config["hidden"]),
        sigma=float(config["sigma"]),
        tau=float(config["tau"]),
        pool=int(config["pool"]),
    )
