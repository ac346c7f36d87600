"""A VisualEncoder stand-in that memoises features on disk, for evaluation sweeps.

Keyed by the exact network input (a hash of the preprocessed tensor of each sample:
image content, input size and any augmentation are all in it), the backbone and the
stages computed. One encoder computes a superset of stages; each `CachedEncoder` view
returns the stages it was asked for, so the plain bank (groups 2+4) and the engine
(group 4) share one extraction. Re-runs after a scoring change skip the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from engine.scoring.visual_encoder import VisualEncoder


class FeatureStore:
    """Features of one (backbone, stages) encoder, in memory and under `folder`."""

    def __init__(self, backbone: str, stages: tuple[int, ...], folder: Path) -> None:
        self.backbone, self.stages = backbone, tuple(sorted(stages))
        self.encoder = VisualEncoder(backbone, self.stages)
        self.folder = Path(folder) / f"{backbone}-{'_'.join(map(str, self.stages))}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, list[torch.Tensor]] = {}
        self.hits = self.misses = 0

    def view(self, stages: tuple[int, ...]) -> CachedEncoder:
        missing = set(stages) - set(self.stages)
        if missing:
            raise ValueError(f"stages {sorted(missing)} not in the store's {self.stages}")
        return CachedEncoder(self, tuple(stages))

    @staticmethod
    def key(sample: torch.Tensor) -> str:
        t = sample.contiguous().float()
        head = f"{tuple(t.shape)}".encode()
        return hashlib.blake2b(head + t.numpy().tobytes(), digest_size=16).hexdigest()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All stored stages for a batch [N, 3, H, W] -> list of [N, C, h, w]."""
        keys = [self.key(s) for s in x]
        got: dict[int, list[torch.Tensor]] = {}
        todo = []
        for i, k in enumerate(keys):
            if k in self._memory:
                got[i] = self._memory[k]
                continue
            path = self.folder / f"{k}.pt"
            if path.exists():
                got[i] = self._memory[k] = torch.load(path, weights_only=True)
            else:
                todo.append(i)
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            feats = self.encoder.forward_features(x[todo])
            for j, i in enumerate(todo):
                per = [f[j].clone() for f in feats]
                got[i] = self._memory[keys[i]] = per
                torch.save(per, self.folder / f"{keys[i]}.pt")
        return [torch.stack([got[i][s] for i in range(len(keys))]) for s in range(len(self.stages))]


class CachedEncoder(nn.Module):
    """What CladRuntime needs of an encoder (forward_features, channels), from a store."""

    def __init__(self, store: FeatureStore, stages: tuple[int, ...]) -> None:
        super().__init__()
        self.store = store
        self.index = [store.stages.index(s) for s in stages]
        base = store.encoder.channels
        self.channels = tuple(base[i] for i in self.index)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.store.features(x)
        return [feats[i] for i in self.index]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)
