"""INT8 against FP32 on one product's labelled images: the per-model check of
`clad export --precision int8 --eval DIR` (issue 17: INT8 is adopted for a model only
when its AUROC is within 0.5 points of FP32)."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from engine.evaluation.evaluate import METRIC_SIZE, score_split
from engine.evaluation.metrics import auroc
from engine.runtime.int8 import IrScorer
from engine.scoring.runtime_model import CladRuntime
from engine.training.datasets import load_mask, split_category

TOLERANCE = 0.5  # AUROC points


@dataclass(frozen=True)
class PrecisionCheck:
    images: int
    anomalous: int
    image_auroc_fp32: float
    image_auroc_int8: float
    pixel_auroc_fp32: float | None
    pixel_auroc_int8: float | None
    # share of images with the same verdict at the model's (FP32-calibrated) threshold
    verdicts_agree: float

    @property
    def within_tolerance(self) -> bool:
        gaps = [self.image_auroc_int8 - self.image_auroc_fp32]
        if self.pixel_auroc_fp32 is not None and self.pixel_auroc_int8 is not None:
            gaps.append(self.pixel_auroc_int8 - self.pixel_auroc_fp32)
        return all(abs(g) <= TOLERANCE for g in gaps)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "within_tolerance": self.within_tolerance}


def compare_int8(runtime: CladRuntime, ir: Path, category: Path, threshold: float,
                 exclude: Set[Path] = frozenset()) -> PrecisionCheck:  # fmt: skip
    """Score `category`'s test images (MVTec layout; `exclude`: the references) with the
    FP32 runtime and with the INT8 IR; AUROC of each and the verdict agreement."""
    split = split_category(category, 0)
    split = replace(split, evaluated=[s for s in split.evaluated
                                      if s.path.resolve() not in exclude])  # fmt: skip
    labels = np.array([s.label for s in split.evaluated])
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError(f"{category}: needs both normal and defect test images to compare")
    size = int(runtime.input_size)
    s32, m32 = score_split(runtime, split, size)
    s8, m8 = score_split(IrScorer(ir), split, size)  # type: ignore[arg-type]
    masks = np.stack([load_mask(s, METRIC_SIZE) for s in split.evaluated])
    has_masks = bool(masks.any())
    return PrecisionCheck(
        images=len(labels), anomalous=int(labels.sum()),
        image_auroc_fp32=100 * auroc(labels, s32), image_auroc_int8=100 * auroc(labels, s8),
        pixel_auroc_fp32=100 * auroc(masks, m32) if has_masks else None,
        pixel_auroc_int8=100 * auroc(masks, m8) if has_masks else None,
        verdicts_agree=float(np.mean((s32 > threshold) == (s8 > threshold))),
    )  # fmt: skip
