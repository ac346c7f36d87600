"""Champion vs challenger on the frozen held-out frames, and the promotion rule.

Both are scored as the worker scores (workers.streaming.scoring.CladRuntimeEngine), the
line context included when the worker has it on: the held-out frames go through in the
order they were captured, each batch at its capture time, so the context fills as it
would on the line (empty at first, as after a model reload).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


# uint8 [N, S, S, 3] frames -> (scores [N], maps [N, h, w]); `now` is the batch's time
Scorer = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def worker_scorer(runtime: CladRuntime, threshold: float, version: str,
                  context: object | None) -> Scorer:
    """The worker's scoring path for a runtime: CladRuntimeEngine, with the line context
    (engine.scoring.line_context.ContextConfig) when given, its clock the frames' time.
    Every frame is searched (no lead): the lead keeps verdicts, not the ranking that
    AUROC measures."""
    from engine.scoring.line_context import ContextConfig
    from workers.streaming.scoring import CladRuntimeEngine

    if isinstance(context, ContextConfig) and context.lead:
        context = context.model_copy(update={"lead": False})
    now = [0.0]
    engine = CladRuntimeEngine(runtime, threshold=threshold, version=version, context=context,
                               clock=lambda: now[0])

    def score(frames: np.ndarray, when: float) -> tuple[np.ndarray, np.ndarray]:
        now[0] = when
        return engine.infer(frames)
    return score


@torch.no_grad()
def evaluate(scorer: Scorer | CladRuntime, frames: Sequence[ConfirmedFrame], threshold: float,
             batch: int = 8, input_size: int | None = None) -> dict[str, float]:
    """Image AUROC, pixel AUROC and F1 at `threshold` (fractions; NaN where undefined).

    `scorer`: a Scorer (worker_scorer) with the frames' `input_size`, or a bare runtime.
    Frames are scored in capture order."""
    if isinstance(scorer, CladRuntime):
        runtime, input_size = scorer, int(scorer.input_size)

        def scorer(x: np.ndarray, _when: float) -> tuple[np.ndarray, np.ndarray]:
            out = runtime(torch.from_numpy(x))
            return out.scores.numpy(), out.maps.numpy()
    assert input_size is not None, "a Scorer needs the input size"
    frames = sorted(frames, key=lambda f: f.captured_at)
    scores, pixel_scores, pixel_labels = [], [], []
    for i in range(0, len(frames), batch):
        part = frames[i:i + batch]
        batch_scores, maps = scorer(_batch(part, input_size).numpy(),
                                    part[-1].captured_at.timestamp())
        scores.extend(np.asarray(batch_scores, np.float64).tolist())
        for frame, amap in zip(part, np.asarray(maps, np.float32), strict=True):
            small = cv2.resize(amap, (_PIXEL_SIDE, _PIXEL_SIDE), interpolation=cv2.INTER_AREA)
            mask = (np.zeros_like(small, bool) if frame.mask is None else
                    cv2.resize(frame.mask, (_PIXEL_SIDE, _PIXEL_SIDE),
                               interpolation=cv2.INTER_NEAREST) > 0)
            pixel_scores.append(small.ravel())
            pixel_labels.append(mask.ravel())
    labels = np.array([f.label == "anomalous" for f in frames], bool)
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
