"""Which confirmed normal frames enter a retrained model's memory bank, and how big it stays.

A line changes (lighting, material, a camera moved): the bank must follow it. Each retrain
picks its reference frames among all confirmed normals of a recent window by a core-set
over whole-frame embeddings, so they cover what the line looks like, with distances
weighted by recency so that of two similar frames the newer one is taken. The bank is the
product's original references (from `clad train`) plus the patches of those frames; the
line part is replaced, never appended to, so the size stays bounded across retrains.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.scoring.memory_bank import greedy_coreset


def recency_weights(ages_s: np.ndarray, half_life_s: float) -> np.ndarray:
    """1 for a frame of now, 1/2 for one half_life_s old, ..."""
    return np.power(0.5, np.maximum(ages_s, 0.0) / max(half_life_s, 1e-9))


def select_references(embeddings: torch.Tensor, ages_s: np.ndarray, k: int, *,
                      half_life_s: float) -> list[int]:
    """Indices of k frames: weighted greedy k-centre over frame embeddings [n, d].

    The first pick is the newest frame; each next pick maximises (distance to the frames
    picked so far) x (recency weight), so an old frame enters only when nothing recent
    looks like it."""
    n = embeddings.shape[0]
    if k >= n:
        return list(range(n))
    x = embeddings.float()
    weights = torch.from_numpy(recency_weights(ages_s, half_life_s)).float()
    first = int(np.argmin(ages_s))
    chosen = [first]
    nearest = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        pick = int(torch.argmax(nearest * weights))
        chosen.append(pick)
        nearest = torch.minimum(nearest, ((x - x[pick]) ** 2).sum(1))
    return chosen


def refreshed_bank(root: torch.Tensor, line: torch.Tensor, *, max_bank: int,
                   seed: int = 0) -> torch.Tensor:
    """The product's reference rows, then at most max(max_bank - len(root), len(root)) rows
    of the line frames' patches (core-set): bounded whatever the number of retrains."""
    budget = max(1, max(max_bank - root.shape[0], root.shape[0]))
    if line.shape[0] > budget:
        line = line[greedy_coreset(line, budget, seed=seed)]
    return torch.cat([root, line]).contiguous()


def root_rows(bank_rows: int, stored: object) -> int:
    """How many leading rows of a champion's bank are the product's own references: as
    recorded by the retrain that built it, else (a model from `clad train`) all of them."""
    if isinstance(stored, int) and 0 < stored <= bank_rows:
        return stored
    return bank_rows


def _pooled(features: list[torch.Tensor]) -> torch.Tensor:
    """One vector per frame: the encoder stages' channel means, concatenated."""
    return torch.cat([f.float().mean(dim=(2, 3)) for f in features], dim=1)


@torch.no_grad()
def frame_embeddings(encoder: torch.nn.Module, images: list[np.ndarray], size: int,
                     batch: int = 8) -> torch.Tensor:
    """[n, d] whole-frame embeddings of uint8 HWC RGB images (any size)."""
    import cv2

    from engine.training.train import preprocess

    out = []
    for i in range(0, len(images), batch):
        part = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                         for im in images[i:i + batch]])
        out.append(_pooled(encoder.forward_features(preprocess(part))))
    return torch.cat(out) if out else torch.zeros(0, 1)


def half_life_from_days(days: float) -> float:
    return days * 86_400.0 if days > 0 and math.isfinite(days) else math.inf
