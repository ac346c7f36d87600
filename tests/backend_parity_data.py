"""Real-image parity cases shared by the backend parity tests (CPU and GPU).

A production-default model (320 px, shifted references, 1 shot) is built from the
first good image of a category and asked to score the rest of test/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import max_f1_threshold
from engine.scoring.heads import CladTextBranch
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import load_rgb, split_category


def parity_case(
    shared_data: Path, category: str, text_branch: bool = False, size: int = 320
) -> tuple[CladRuntime, np.ndarray, np.ndarray]:
    """(runtime, frames uint8 [N, size, size, 3], labels [N]) for one mvtec-sample category.

    With `text_branch`, a CLAD text branch with random (seeded) heads is added with the
    weights a trained model uses: it is the same graph, so it tests the same ops.
    """
    torch.manual_seed(0)
    weights = {"w_text_pixel": 0.5, "w_text_image": 0.5} if text_branch else {}
    cfg = ScoringConfig(input_size=size, **weights)
    split = split_category(shared_data / "mvtec-sample" / category, shots=1)
    enc = VisualEncoder(cfg.backbone, cfg.stages)
    branch = None
    if text_branch:
        branch = CladTextBranch(sum(enc.channels), torch.randn(3, 384), torch.randn(4, 384))
    refs = [load_rgb(p, size) for p in split.references]
    runtime = build_runtime(refs, cfg, text_branch=branch, encoder=enc).eval()
    frames = np.stack([load_rgb(s.path, size) for s in split.evaluated])
    labels = np.array([s.label for s in split.evaluated])
    return runtime, frames, labels


def operating_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The max-F1 cut of the reference scores, placed midway into the gap below it.

    A calibrated threshold comes from other frames and never coincides with a test
    score; max_f1_threshold returns a score itself, where a 1e-7 difference would
    flip a verdict that no float backend can promise.
    """
    cut, _ = max_f1_threshold(scores, labels)
    below = scores[scores < cut]
    return float((cut + below.max()) / 2) if below.size else float(cut) - 1e-3


def verdicts(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(scores) >= threshold
