"""Frames and a 1-shot runtime shared by the engine's and the worker's line-context tests."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.runtime_model import CladRuntime

SIZE = 96


def stripe_frame(seed: int, defect: bool = False) -> np.ndarray:
    """A stripe texture with per-frame noise and phase jitter; `defect`: a dark blob."""
    rng = np.random.default_rng(seed)
    _yy, xx = np.mgrid[:SIZE, :SIZE]
    phase = rng.uniform(-0.6, 0.6)
    base = 128 + 60 * np.sin(xx / 3.0 + phase) + rng.normal(0, 6, (SIZE, SIZE))
    img = np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if defect:
        cv2.circle(img, (60, 40), 8, (20, 20, 20), -1)
    return img


def stripe_runtime() -> CladRuntime:
    """1-shot runtime on stripe_frame(0)."""
    torch.manual_seed(0)
    return build_runtime([stripe_frame(0)], ScoringConfig(input_size=SIZE, sigma=2.0))
