"""Champion vs challenger on the frozen held-out frames, and the promotion rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine.evaluation.metrics import auroc
from engine.scoring.runtime_model import CladRuntime
from workers.retraining.data import ConfirmedFrame

# Pixel AUROC on maps shrunk to this side: millions of pixels add no information here.
_PIXEL_SIDE = 128


def _batch(frames: Sequence[ConfirmedFrame], size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([cv2.resize(f.image, (size, size),
                                                 interpolation=cv2.INTER_AREA) for f in frames]))


@torch.no_grad()
def frame_scores(runtime: CladRuntime, frames: Sequence[ConfirmedFrame],
                 batch: int = 8) -> tuple[list[float], list[float]]:
    """(image scores, pixel-map peaks) of the frames; the peaks calibrate the region
    threshold (engine.scoring.calibration.pixel_threshold keeps only a map's maximum)."""
    size = int(runtime.input_size)
    scores, peaks = [], []
    for i in range(0, len(frames), batch):
        out = runtime(_batch(frames[i:i + batch], size))
        scores += out.scores.tolist()
        peaks += out.maps.flatten(1).max(dim=1).values.tolist()
    return scores, peaks


@torch.no_grad()
def evaluate(runtime: CladRuntime, frames: Sequence[ConfirmedFrame], threshold: float,
             batch: int = 8) -> dict[str, float]:
    """Image AUROC, pixel AUROC and F1 at `threshold` (fractions; NaN where undefined)."""
    size = int(runtime.input_size)
    scores, pixel_scores, pixel_labels = [], [], []
    for i in range(0, len(frames), batch):
        part = frames[i:i + batch]
        out = runtime(_batch(part, size))
        scores.extend(out.scores.tolist())
        for frame, amap in zip(part, out.maps.numpy(), strict=True):
            small = cv2.resize(amap, (_PIXEL_SIDE, _PIXEL_SIDE), interpolation=cv2.INTER_AREA)
            mask = (np.zeros_like(small, bool) if frame.mask is None else
                    cv2.resize(frame.mask, (_PIXEL_SIDE, _PIXEL_SIDE),
                               interpolation=cv2.INTER_NEAREST) > 0)
            pixel_scores.append(small.ravel())
            pixel_labels.append(mask.ravel())
    labels = np.array([f.label == "anomalous" for f in frames])
    predicted = np.array(scores) >= threshold
    tp = int((predicted & labels).sum())
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(labels.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    has_masks = any(f.mask is not None for f in frames)
    return {
        "image_auroc": auroc(labels, np.array(scores)),
        "pixel_auroc": (auroc(np.concatenate(pixel_labels), np.concatenate(pixel_scores))
                        if has_masks else float("nan")),
        "f1_at_threshold": float(f1),
        "n_normal": float((~labels).sum()),
        "n_anomalous": float(labels.sum()),
    }


MAIN_METRIC = "image_auroc"
COMPARED = ("image_auroc", "pixel_auroc", "f1_at_threshold")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(challenger: dict[str, float], champion: dict[str, float], *,
           tolerance: float = 0.02) -> Decision:
    """Promote only if better on the main metric and no metric worse by more than
    `tolerance` (absolute, metrics in [0, 1])."""
    main_new, main_old = challenger[MAIN_METRIC], champion[MAIN_METRIC]
    if math.isnan(main_new):
        return Decision(False, "held-out set lacks normal or anomalous frames: "
                               f"{MAIN_METRIC} undefined, nothing can be promoted")
    for name in COMPARED:
        new, old = challenger.get(name, math.nan), champion.get(name, math.nan)
        if not (math.isnan(new) or math.isnan(old)) and new < old - tolerance:
            return Decision(False, f"{name} worse: {new:.4f} vs champion {old:.4f} "
                                   f"(tolerance {tolerance})")
    if not math.isnan(main_old) and main_new <= main_old:
        return Decision(False, f"{MAIN_METRIC} not better: {main_new:.4f} vs champion "
                               f"{main_old:.4f}")
    return Decision(True, f"{MAIN_METRIC} {main_old:.4f} -> {main_new:.4f}; no metric worse "
                          f"than {tolerance}")
