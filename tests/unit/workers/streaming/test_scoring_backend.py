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


def test_int8_serves_the_versions_ir_and_refuses_the_line_context(tmp_path: Path) -> None:
    """CLAD_CPU_PRECISION=int8: the IR `clad export --precision int8` built, under
    OpenVINO (auto resolves there); the line context (FP32 embeddings) is refused by
    name, and a version without an IR names the command that builds it."""
    from engine.runtime.int8 import build_int8, int8_dir
    from engine.runtime.protocol import BackendUnavailableError
    from engine.scoring.line_context import ContextConfig

    rng = _save(tmp_path)
    with pytest.raises(BackendUnavailableError, match="clad export"):
        load_trained(tmp_path, "part", backend="auto", precision="int8")
    with pytest.raises(ValueError, match="CLAD_LINE_CONTEXT=false"):
        load_trained(tmp_path, "part", backend="auto", precision="int8", context=ContextConfig())
    _, fp32 = load_trained(tmp_path, "part", backend="torch")
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    build_int8(fp32.runtime, [reference], ScoringConfig(input_size=64, aug_shifts=()),
               int8_dir(tmp_path / "part" / "v1"))  # fmt: skip
    _, engine = load_trained(tmp_path, "part", backend="auto", precision="int8")
    assert engine.backend.name == "openvino-cpu-int8"
    scores, maps = engine.infer(rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert scores.shape == (3,) and maps.shape == (3, 64, 64) and np.isfinite(scores).all()
