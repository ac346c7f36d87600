"""Model directories: save/load round trip gives identical outputs; layout; errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import ModelArtifactError
from engine.scoring.artifacts import ModelMetadata, list_versions, load_model, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.heads import CladTextBranch
from engine.scoring.prompts import build_prompts
from engine.scoring.visual_encoder import VisualEncoder

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=(), w_text_pixel=0.5, w_text_image=0.5)
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)  # random: no weights needed
    branch = CladTextBranch(sum(enc.channels), torch.randn(3, 12), torch.randn(4, 12), 16, 32)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    rt = build_runtime([ref], cfg, text_branch=branch, encoder=enc).eval()
    meta = ModelMetadata(
        category="bottle", scoring=cfg, threshold=Threshold(1.5, "false_alarm_rate", 4, 0),
        prompts=build_prompts("bottle"), metrics={"loss": [1.0, 0.5]}, version="v1",
    )  # fmt: skip
    out = save_model(rt, tmp_path_factory.mktemp("models"), meta)
    frames = torch.from_numpy(rng.integers(0, 255, size=(2, 80, 96, 3), dtype=np.uint8))
    return out, rt, frames


def test_layout(saved: tuple[Path, torch.nn.Module, torch.Tensor]) -> None:
    out, _, _ = saved
    assert out.parts[-2:] == ("bottle", "v1")
    assert {p.name for p in out.iterdir()} == {
        "model.pt", "config.json", "thresholds.json", "prompts.json", "metrics.json",
    }  # fmt: skip
    assert json.loads((out / "config.json").read_text())["text_branch"]["joint_dim"] == 16
    assert list_versions(out.parent.parent, "bottle") == ["v1"]


def test_round_trip_identical_outputs(saved: tuple[Path, torch.nn.Module, torch.Tensor]) -> None:
    out, rt, frames = saved
    loaded = load_model(out.parent.parent, "bottle")  # latest version of the category
    assert loaded.version == "v1" and loaded.category == "bottle" and loaded.threshold == 1.5
    assert loaded.prompts is not None and loaded.prompts.object_name == "bottle"
    assert loaded.metadata["metrics"] == {"loss": [1.0, 0.5]}
    with torch.no_grad():
        a, b = rt(frames), loaded.runtime(frames)
    assert torch.equal(a.scores, b.scores) and torch.equal(a.maps, b.maps)


def test_existing_version_and_missing_files_are_errors(
    saved: tuple[Path, torch.nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    out, rt, _ = saved
    meta = ModelMetadata("bottle", ScoringConfig(), Threshold(1.0, "false_alarm_rate", 1, 0))
    with pytest.raises(ModelArtifactError, match="exists"):
        save_model(rt, out.parent.parent, ModelMetadata(**{**meta.__dict__, "version": "v1"}))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelArtifactError, match="missing"):
        load_model(tmp_path)
    with pytest.raises(ModelArtifactError, match="no saved model"):
        load_model(out.parent.parent, "capsule")


def test_loading_never_imports_training_code() -> None:
    code = (
        "import sys, engine.scoring.artifacts; "
        "bad = [m for m in ('engine.training.train', 'engine.training.losses', "
        "'engine.training.synthetic', "
        "'engine.scoring.text_encoder', 'sentence_transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[4])


def test_region_threshold_is_stored_with_the_image_threshold(
    saved: tuple[Path, torch.nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    _, rt, _ = saved
    meta = ModelMetadata("bottle", ScoringConfig(input_size=64, aug_shifts=()),
                         Threshold(1.5, "false_alarm_rate", 4, 0, pixel=2.25), version="v2")
    out = save_model(rt, tmp_path, meta)
    assert json.loads((out / "thresholds.json").read_text())["pixel"] == 2.25
    loaded = load_model(out)
    assert loaded.threshold == 1.5 and loaded.pixel_threshold == 2.25


def test_artefact_saved_before_the_region_threshold_loads_with_a_logged_fallback(
    saved: tuple[Path, torch.nn.Module, torch.Tensor], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    out, _, _ = saved
    old = tmp_path / "bottle" / "v0"
    old.mkdir(parents=True)
    for f in out.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    thresholds = json.loads((old / "thresholds.json").read_text())
    del thresholds["pixel"]  # as written before the field existed
    (old / "thresholds.json").write_text(json.dumps(thresholds))
    with caplog.at_level("INFO", logger="engine.scoring.artifacts"):
        loaded = load_model(old)
    assert loaded.threshold == 1.5 and loaded.pixel_threshold == 1.5
    assert "no calibrated region threshold" in caplog.text and str(old) in caplog.text
