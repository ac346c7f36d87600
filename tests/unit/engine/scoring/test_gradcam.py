"""Grad-CAM: shape, range, no parameter gradients left behind, and it follows the score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.gradcam import gradcam
from engine.scoring.heads import CladTextBranch
from engine.scoring.visual_encoder import VisualEncoder

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runtime() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    branch = CladTextBranch(sum(enc.channels), torch.randn(2, 8), torch.randn(2, 8), 16, 32)
    return build_runtime([], cfg, text_branch=branch, encoder=enc).eval()


def test_shape_range_and_clean_parameters(runtime: torch.nn.Module) -> None:
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 48, 56, 3), np.uint8))
    cam = gradcam(runtime, frames)
    assert cam.shape == (2, 48, 56)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0 + 1e-6
    assert all(p.grad is None for p in runtime.parameters())


def test_without_text_branch_is_an_error(runtime: torch.nn.Module) -> None:
    branch, runtime.text_branch = runtime.text_branch, None
    try:
        with pytest.raises(ValueError, match="text branch"):
            gradcam(runtime, torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    finally:
        runtime.text_branch = branch
