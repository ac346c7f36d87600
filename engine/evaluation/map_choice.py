"""Which pixel map a product uses, chosen from its own labelled defects (issue 30).

A runtime built with the defaults holds two maps: the fine one (unpooled stride-16
embeddings against their own bank, the default pixel map) and the pooled one (the 3x3-pooled
map the image score is taken from). Neither wins on every product, and no fixed mix of
the two does: the fine map wins on thin defects in fine textures (grid: 7-11 points of pixel
AUROC), the pooled one on large or structural defects (transistor's missing and misplaced
parts: 4-6 points; magnetic tile 1-3), see engine/scoring/NOTES.md. Defects drawn on the
references do not tell the two apart: they favour the fine map on every product, transistor
included. So the product's own labelled defects decide: the pooled map only when it beats
the fine map by `margin` points of pixel AUROC on them, from at least `min_frames` labelled
defect frames; otherwise the default stays. Choosing the pooled map also drops the second
search (one map, as models saved before the split). Later, the map in use stays unless the
other one beats it by the same margin.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from engine.evaluation.metrics import auroc
from engine.scoring.builder import ScoringConfig
from engine.scoring.runtime_model import CladRuntime

PixelMap = Literal["fine", "pooled"]
MARGIN = 1.0  # points of pixel AUROC the pooled map must gain to replace the default
MIN_FRAMES = 3  # labelled defect frames (with a drawn or confirmed mask) to decide on
SIDE = 64  # maps and masks compared at this side: enough pixels, little work


@dataclass(frozen=True)
class MapChoice:
    """The pixel map chosen for a product and the evidence it was chosen on."""

    map: PixelMap
    reason: str
    frames: int = 0
    fine_auroc: float | None = None  # % pixel AUROC on the labelled frames
    pooled_auroc: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: an AUROC not measured is None (Postgres JSON has no NaN)."""
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v
                for k, v in asdict(self).items()}


def decide(fine: float, pooled: float, frames: int, *, margin: float = MARGIN,
           min_frames: int = MIN_FRAMES, current: PixelMap = "fine") -> MapChoice:  # fmt: skip
    """The rule on measured pixel AUROCs (%): the `current` map stays unless the other one
    beats it by `margin` points on at least `min_frames` frames."""
    if frames < min_frames:
        why = f"{frames} labelled defect frames with a mask; the choice needs {min_frames}"
        return MapChoice(current, why, frames, fine, pooled)
    if not (np.isfinite(fine) and np.isfinite(pooled)):
        return MapChoice(current, "no defect pixels in the labelled masks", frames, fine, pooled)
    on = f"pixel AUROC on {frames} labelled frames"
    if current == "fine" and pooled >= fine + margin:
        return MapChoice("pooled", f"pooled map {pooled:.1f} vs fine {fine:.1f} {on}",
                         frames, fine, pooled)  # fmt: skip
    if current == "pooled" and fine >= pooled + margin:
        return MapChoice("fine", f"fine map {fine:.1f} vs pooled {pooled:.1f} {on}",
                         frames, fine, pooled)  # fmt: skip
    other = "pooled" if current == "fine" else "fine"
    why = (f"{current} map kept: fine {fine:.1f} vs pooled {pooled:.1f} {on} "
           f"({other} needs +{margin:g})")  # fmt: skip
    return MapChoice(current, why, frames, fine, pooled)


@torch.no_grad()
def reference_maps(rt: CladRuntime, images: Sequence[np.ndarray], side: int = SIDE,
                   batch: int = 8) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(fine, pooled) maps [N, side, side] of uint8 HWC images against the references alone
    (no line context: the choice belongs to the model, not to a moment of the line)."""
    size = int(rt.input_size)
    fine, pooled = [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                                       for im in images[i:i + batch]]))  # fmt: skip
        feats = rt.encoder.forward_features(rt.preprocess(x))
        amap = rt.w_visual * rt.visual_map(feats)
        pmap = rt.w_visual * rt.visual_map(feats, pixel=True)
        fine.append(rt.finish(feats, amap, pmap, side, side).maps.float().numpy())
        pooled.append(rt.finish(feats, amap, None, side, side).maps.float().numpy())
    return np.concatenate(fine), np.concatenate(pooled)


def choose_pixel_map(rt: CladRuntime, images: Sequence[np.ndarray],
                     masks: Sequence[np.ndarray | None], *, margin: float = MARGIN,
                     min_frames: int = MIN_FRAMES, side: int = SIDE,
                     current: PixelMap = "fine") -> MapChoice:  # fmt: skip
    """The pixel map for `rt`'s product from labelled defect frames (uint8 HWC images, masks
    HW non-zero = defect; frames without a mask are not used); `current`: the map the
    product uses now, kept unless the other one wins (`decide`). `rt` must hold both maps."""
    if not rt.split_maps:
        return MapChoice("pooled", "the model has one map (no pixel bank)")
    pairs = [(im, m) for im, m in zip(images, masks, strict=True) if m is not None and m.any()]
    if len(pairs) < min_frames:
        return decide(float("nan"), float("nan"), len(pairs), margin=margin,
                      min_frames=min_frames, current=current)  # fmt: skip
    fine, pooled = reference_maps(rt, [im for im, _ in pairs], side)
    truth = np.stack([cv2.resize((m > 0).astype(np.uint8), (side, side),
                                 interpolation=cv2.INTER_NEAREST) for _, m in pairs])
    truth = truth > 0
    return decide(100 * auroc(truth, fine), 100 * auroc(truth, pooled), len(pairs),
                  margin=margin, min_frames=min_frames, current=current)  # fmt: skip


def current_map(config: ScoringConfig) -> PixelMap:
    """The map a model's scoring config gives it: "pooled" when it has one map."""
    return "pooled" if config.pixel_pool in (None, config.pool) else "fine"


def pooled_only(rt: CladRuntime) -> CladRuntime:
    """A copy of the runtime without its pixel bank: its pixel map is its image map."""
    one_map = copy.copy(rt)
    one_map._buffers = dict(rt._buffers)  # its own buffer table: `rt` keeps its pixel bank
    one_map.pixel_bank = torch.zeros(0, rt.bank.shape[1], dtype=rt.bank.dtype)
    one_map.pixel_pool = rt.pool
    return one_map


def apply_choice(rt: CladRuntime, config: ScoringConfig,
                 choice: MapChoice) -> tuple[CladRuntime, ScoringConfig]:  # fmt: skip
    """The runtime and its stored config with the chosen map: for "pooled", a copy of the
    runtime without its pixel bank (its pixel map is then its image map) and
    `pixel_pool=None`; for "fine", both unchanged."""
    if choice.map == "fine" or not rt.split_maps:
        return rt, config
    return pooled_only(rt), config.model_copy(update={"pixel_pool": None})
