"""`clad export`: ONNX written into the model version; TensorRT absent -> clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.visual_encoder import VisualEncoder
from workers.cli.main import _register_subcommands, app

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    ref = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rt = build_runtime([ref], cfg, encoder=enc)
    meta = ModelMetadata(category="bottle", scoring=cfg, version="v1",
                         threshold=Threshold(1.5, "false_alarm_rate", 4, 0))  # fmt: skip
    return save_model(rt, tmp_path_factory.mktemp("models"), meta)


def _run(*args: str) -> object:
    _register_subcommands()
    return CliRunner().invoke(app, ["export", *args])


def test_export_onnx_into_version_dir(version_dir: Path) -> None:
    result = _run("--model", str(version_dir.parent.parent), "--category", "bottle")
    assert result.exit_code == 0, result.output
    (onnx_file,) = (version_dir / "runtime").glob("model-*-64x64-op17.onnx")
    assert str(onnx_file) in result.output and "check vs torch" in result.output


@pytest.mark.usefixtures("without_gpu_packages")
def test_export_tensorrt_without_packages(version_dir: Path) -> None:
    result = _run("--model", str(version_dir), "--backend", "tensorrt", "--max-batch", "8")
    assert result.exit_code == 2
    assert "pip install 'clad-line[gpu]'" in result.output


def test_export_openvino_compiles_into_version_dir(version_dir: Path) -> None:
    pytest.importorskip("openvino")
    result = _run("--model", str(version_dir), "--backend", "openvino", "--requests", "2")
    assert result.exit_code == 0, result.output
    assert "openvino: compiled model ready (openvino-cpu-fp32, 2 requests)" in result.output
    assert "check vs torch" in result.output
    assert list((version_dir / "runtime" / "openvino").glob("*-s2t*-64x64.blob"))


def test_export_openvino_without_the_package(
    version_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.runtime.openvino_backend.openvino_installed", lambda: False)
    result = _run("--model", str(version_dir), "--backend", "openvino")
    assert result.exit_code == 2
    assert "pip install openvino" in result.output
