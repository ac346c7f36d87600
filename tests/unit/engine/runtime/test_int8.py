"""INT8 trunk (engine.runtime.int8): bank and scale rebuilt by the quantized encoder,
the IR found and served by the openvino backend, the export command and its check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.runtime.export import export_onnx
from engine.runtime.int8 import (
    IrScorer,
    bank_queries,
    build_int8,
    find_int8,
    int8_dir,
    read_report,
)
from engine.runtime.protocol import BackendUnavailableError
from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.runtime_model import CladRuntime

pytestmark = pytest.mark.unit
CFG = ScoringConfig(input_size=96, sigma=2.0)


def _texture(seed: int, size: int = 96) -> np.ndarray:
    """A regular stripe texture with a little noise (uint8 HWC RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(xx / 3.0 + yy / 11.0) + rng.normal(0, 4, (size, size))
    return np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _defect(seed: int) -> np.ndarray:
    img = _texture(seed).copy()
    cv2.circle(img, (60, 40), 9, (20, 20, 20), -1)
    return img


@pytest.fixture(scope="module")
def runtime() -> CladRuntime:
    torch.manual_seed(0)
    return build_runtime([_texture(0)], CFG)


@pytest.fixture(scope="module")
def built(runtime: CladRuntime, tmp_path_factory: pytest.TempPathFactory) -> object:
    return build_int8(runtime, [_texture(0)], CFG, tmp_path_factory.mktemp("int8"))


def test_the_bank_search_inputs_are_found(runtime: CladRuntime, tmp_path: Path) -> None:
    exp = export_onnx(runtime, tmp_path / "m.onnx")
    image, pixel = bank_queries(exp.path, runtime)
    assert image and pixel and image != pixel  # split maps: two searches, two inputs
    small = build_runtime([_texture(0)], CFG.model_copy(update={"pixel_pool": None}))
    exp = export_onnx(small, tmp_path / "one.onnx")
    assert bank_queries(exp.path, small)[1] is None


def test_build_writes_the_ir_and_its_report(built: object, runtime: CladRuntime) -> None:
    path = built.path  # type: ignore[attr-defined]
    assert path.is_file() and path.with_suffix(".bin").is_file()
    report = read_report(path)
    assert report == built.report  # type: ignore[attr-defined]
    # the second quantization reproduced the embeddings the bank was built from
    assert report.self_check_relative_diff < 1e-3
    # reference, 8 shifts, 2 rotations, held-out view, one drawing per generic kind
    assert report.calibration_views == 1 + 8 + 2 + 1 + 11
    # the scales are the quantized encoder's own: near the FP32 ones, not equal to them
    assert report.image_scale_int8 != pytest.approx(report.image_scale_fp32, rel=1e-6)
    assert report.image_scale_int8 == pytest.approx(report.image_scale_fp32, rel=0.5)
    assert find_int8(path.parent, runtime) == path


def test_int8_scores_follow_fp32(built: object, runtime: CladRuntime) -> None:
    frames = np.stack([_texture(1), _texture(2), _defect(3), _defect(4)])
    with torch.no_grad():
        ref = runtime(torch.from_numpy(frames))
    out = IrScorer(built.path)(torch.from_numpy(frames))  # type: ignore[attr-defined]
    assert out.maps.shape == ref.maps.shape == (4, 96, 96)
    s8, s32 = out.scores.numpy(), ref.scores.numpy()
    assert s8[2:].min() > 1.5 * s8[:2].max()  # the defects still stand out
    np.testing.assert_allclose(s8, s32, rtol=0.25)  # same units: normal ~ 1 in both
    assert np.unravel_index(out.maps[2].argmax(), (96, 96))[1] > 40  # the hot spot's side


def test_backend_serves_the_versions_ir(runtime: CladRuntime, tmp_path: Path) -> None:
    from engine.runtime.openvino_backend import openvino_backend
    from engine.runtime.select import make_backend

    with pytest.raises(BackendUnavailableError, match="clad export .*--precision int8"):
        openvino_backend(runtime, tmp_path, requests=1, threads=1, precision="int8")
    built = build_int8(runtime, [_texture(0)], CFG, int8_dir(tmp_path))
    backend = make_backend("openvino", runtime, version_dir=tmp_path, precision="int8",
                           requests=1, intra_op_threads=1)  # fmt: skip
    frames = np.stack([_texture(5), _defect(6)])
    scores, maps = backend.infer(frames)
    want = IrScorer(built.path)(torch.from_numpy(frames))
    np.testing.assert_allclose(scores, want.scores.numpy(), rtol=1e-5)
    assert backend.name == "openvino-cpu-int8"
    with pytest.raises(BackendUnavailableError, match="openvino backend only"):
        make_backend("onnxruntime", runtime, version_dir=tmp_path, precision="int8")


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(model version dir, reference folder, MVTec-layout evaluation folder)."""
    root = tmp_path_factory.mktemp("product")
    refs = root / "good"
    refs.mkdir()
    cv2.imwrite(str(refs / "000.png"), _texture(0))
    cat = root / "widget"
    for kind, make, seeds in (("good", _texture, range(10, 16)), ("hole", _defect, range(20, 26))):
        (cat / "test" / kind).mkdir(parents=True)
        for s in seeds:
            cv2.imwrite(str(cat / "test" / kind / f"{s:03d}.png"), make(s))
            if kind == "hole":
                (cat / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                mask = np.zeros((96, 96), np.uint8)
                cv2.circle(mask, (60, 40), 9, 255, -1)
                cv2.imwrite(str(cat / "ground_truth" / kind / f"{s:03d}_mask.png"), mask)
    torch.manual_seed(0)
    rt = build_runtime([_texture(0)], CFG)
    meta = ModelMetadata(category="widget", scoring=CFG, version="v1",
                         threshold=Threshold(1.5, "false_alarm_rate", 4, 0))  # fmt: skip
    return save_model(rt, root / "models", meta), refs, cat


def _export(*args: str) -> object:
    from workers.cli.main import _register_subcommands, app

    _register_subcommands()
    return CliRunner().invoke(app, ["export", *args])


def test_export_int8_needs_references_and_openvino(product: tuple[Path, Path, Path]) -> None:
    vdir, refs, _ = product
    result = _export("--model", str(vdir), "--backend", "openvino", "--precision", "int8")
    assert result.exit_code == 2 and "needs --references" in result.output
    result = _export("--model", str(vdir), "--precision", "int8", "--references", str(refs))
    assert result.exit_code == 2 and "--backend openvino" in result.output
    empty = refs.parent / "empty"
    empty.mkdir(exist_ok=True)
    result = _export("--model", str(vdir), "--backend", "openvino", "--precision", "int8",
                     "--references", str(empty))  # fmt: skip
    assert result.exit_code == 2 and "no images" in result.output


def test_export_int8_builds_and_reports_the_check(product: tuple[Path, Path, Path]) -> None:
    vdir, refs, cat = product
    result = _export("--model", str(vdir), "--backend", "openvino", "--precision", "int8",
                     "--references", str(refs), "--eval", str(cat))  # fmt: skip
    assert result.exit_code == 0, result.output
    (ir,) = int8_dir(vdir).glob("*-int8-*.xml")
    assert str(ir) in result.output
    # 6 normal and 6 holes the model separates in FP32; INT8 must too
    assert "int8 check on 12 images (6 defective): image AUROC 100.0 -> 100.0" in result.output
    assert "ADOPT" in result.output and "same verdict" in result.output
