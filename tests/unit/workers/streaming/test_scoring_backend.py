"""The worker serves a saved model through the backend the settings choose."""

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.visual_encoder import VisualEncoder
from workers.streaming.scoring import load_trained

pytestmark = pytest.mark.unit


def _save(tmp_path: Path) -> np.random.Generator:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    encoder = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    save_model(build_runtime([reference], cfg, encoder=encoder).eval(), tmp_path, ModelMetadata(
        category="part", scoring=cfg, threshold=Threshold(1.1, "false_alarm_rate", 2, 0),
        version="v1"))
    return rng


def test_onnxruntime_backend_serves_the_saved_model_like_torch(tmp_path: Path) -> None:
    rng = _save(tmp_path)
    frames = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)

    product, ort = load_trained(tmp_path, "part", backend="onnxruntime", max_batch=2)
    _, reference_engine = load_trained(tmp_path, "part", backend="torch")
    assert product == "part" and ort.backend.name.startswith("onnxruntime")
    assert reference_engine.backend is None
    scores, maps = ort.infer(frames)  # 3 frames through max_batch 2: chunked
    want_scores, want_maps = reference_engine.infer(frames)
    assert scores.shape == (3,) and maps.shape == want_maps.shape
    np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    np.testing.assert_allclose(maps, want_maps, atol=1e-3)
    assert list((tmp_path / "part" / "v1" / "runtime").glob("*.onnx"))  # cached beside it


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_requests_in_flight_serve_the_saved_model_like_torch(tmp_path: Path,
                                                                 backend: str) -> None:
    """CLAD_INFER_REQUESTS reaches the backend; a batch split over the requests scores
    like the torch module, frames in their order."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    rng = _save(tmp_path)
    frames = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    _, engine = load_trained(tmp_path, "part", backend=backend, max_batch=4, requests=2)
    _, reference_engine = load_trained(tmp_path, "part", backend="torch")
    assert engine.backend.name.startswith(backend) and engine.backend.requests == 2
    scores, maps = engine.infer(frames)
    want_scores, want_maps = reference_engine.infer(frames)
    np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    np.testing.assert_allclose(maps, want_maps, atol=1e-3)
