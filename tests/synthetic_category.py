"""A tiny MVTec-layout category whose kinds no vocabulary file knows, with features that
carry each region's kind and a fake text encoder: region_eval and train-describer tests
without an encoder or a text model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

SIZE = 32
KINDS = {"bent_lead": 4, "cut_lead": 3, "misplaced": 1}  # folder -> images
ALL_KINDS = ["bent_lead", "cut_lead", "damaged_case", "misplaced"]


def make_category(root: Path, kinds: dict[str, int] = KINDS) -> Path:
    """A transistor-like category: no vocabulary file knows its kinds."""
    cat = root / "gizmo"
    for i in range(2):
        (cat / "test" / "good").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(cat / "test" / "good" / f"{i:03d}.png"), np.full((SIZE,) * 2, 90, np.uint8))
    for k, (kind, n) in enumerate(kinds.items()):
        (cat / "test" / kind).mkdir(parents=True)
        (cat / "ground_truth" / kind).mkdir(parents=True)
        for i in range(n):
            img = np.full((SIZE, SIZE), 30 + 60 * k, np.uint8)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[4 + 3 * i : 10 + 3 * i, 4 + 5 * k : 12 + 5 * k] = 255
            cv2.imwrite(str(cat / "test" / kind / f"{i:03d}.png"), img)
            cv2.imwrite(str(cat / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return cat


class KindFeatures:
    """Features that carry the kind (its folder) in a channel of its own."""

    size = SIZE

    def get(self, path: Path) -> torch.Tensor:
        f = torch.randn(6, 8, 8, generator=torch.Generator().manual_seed(hash(path.name) % 97))
        f[ALL_KINDS.index(path.parent.name)] += 3.0
        return f.half()


class FakeText:
    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([torch.full((12,), float(len(t))) + torch.arange(12.0) * (i % 3)
                            for i, t in enumerate(texts)]) / 10  # fmt: skip
