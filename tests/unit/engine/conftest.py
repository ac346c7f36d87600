"""Shared engine-test fixtures: a small random-weights runtime, GPU packages hidden."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.visual_encoder import VisualEncoder


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest) -> torch.nn.Module:
    """A 1-shot runtime on random encoder weights (fast, no weights package needed),
    with the input side given by the test module's SIZE (default 64)."""
    size = int(getattr(request.module, "SIZE", 64))
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=size, aug_shifts=())
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    ref = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return build_runtime([ref], cfg, encoder=enc)


@pytest.fixture
def without_gpu_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt and pycuda look uninstalled, whatever this machine has."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("tensorrt", "pycuda") else real(name, *a),
    )  # fmt: skip
