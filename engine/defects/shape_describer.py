"""The default describer's model: generic defect kinds from a region's shape and its
pixels against the ring around it (engine.defects.region_features), by a random forest
(engine.defects.kind_forest).

It answers the same calls as RegionDescriber (engine.defects.describer: `region_embeddings`,
`kind_probabilities`, `phrase_scores`), so the worker, the region cache and
`clad describe` treat both alike. Its "patch embeddings" are the frame's pixels
(NCHW uint8, `pixel_input`) and its region "embedding" is the feature vector, which
is also what the region cache fingerprints.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.defects.kind_forest import KindForest
from engine.defects.refine import refine_region
from engine.defects.region_features import N_FEATURES, features_of, frame_planes

PIXELS = "pixels"  # describer.json features["encoder"] of a describer that reads pixels


def pixel_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 NHWC frames -> the NCHW uint8 tensor a ShapeDescriber reads."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class ShapeDescriber:
    """Region features -> forest class shares over the vocabulary's kinds."""

    in_channels = 3
    joint_dim = N_FEATURES

    def __init__(self, forest: KindForest, vocab_owner: list[int], refine: bool = False,
                 enclosed_share: float = 0.0) -> None:  # fmt: skip
        if forest.n_features != N_FEATURES:
            raise ValueError(f"the forest reads {forest.n_features} features, "
                             f"engine.defects.region_features computes {N_FEATURES}")  # fmt: skip
        self.forest = forest
        self.vocab_owner = torch.as_tensor(vocab_owner, dtype=torch.long)
        self.n_kinds = int(forest.value.shape[1])
        # describe the pixels that stand out inside each region (engine.defects.refine), as
        # the forest saw its training regions, not the whole map blob
        self.refine = refine
        # small enclosed off-foreground spots lie on the part (region_features.ENCLOSED_SHARE)
        # when the forest was trained so
        self.enclosed_share = enclosed_share

    def eval(self) -> ShapeDescriber:  # the call sites treat it as a torch module
        return self

    def region_embeddings(self, pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, H, W] uint8 (one row per region) + masks [N, H', W'] -> [N, F]
        (each mask refined first when the describer was trained so).

        The rows of one frame's regions are one frame repeated (`embed_regions` expands
        it): consecutive rows that view the same pixels share that frame's planes."""
        frames = pixels.permute(0, 2, 3, 1).numpy()
        m = masks.numpy().astype(np.uint8)
        feats: list[np.ndarray] = []
        planes = None
        for i in range(len(m)):
            if planes is None or not _same_pixels(frames[i], frames[i - 1]):
                planes = frame_planes(frames[i], self.enclosed_share)
            mask = refine_region(planes, m[i]) if self.refine else m[i]
            feats.append(features_of(planes, mask))
        return torch.from_numpy(np.stack(feats)) if feats else torch.zeros(0, N_FEATURES)

    def kind_probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.forest.predict_proba(emb.numpy()))

    def phrase_scores(self, emb: torch.Tensor) -> torch.Tensor:
        """No text side: every phrasing scores alike, so a kind reads as its first."""
        return torch.zeros(emb.shape[0], len(self.vocab_owner))


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two frames hold the same pixels: the same view of one buffer (checked
    first, free) or equal contents."""
    same_view = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                 and a.shape == b.shape and a.strides == b.strides)  # fmt: skip
    return same_view or bool(np.array_equal(a, b))
