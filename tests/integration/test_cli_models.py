"""`clad model register/list` on a migrated SQLite database, as an operator runs it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.prompts import build_prompts
from engine.scoring.visual_encoder import VisualEncoder
from pipeline.storage.database import make_engine, make_session_factory
from pipeline.storage.migrate import upgrade
from pipeline.storage.repository import active_model_version

pytestmark = pytest.mark.integration


def _clad(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, check=False)


def test_register_activate_and_list(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    encoder = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    reference = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    runtime = build_runtime([reference], cfg, encoder=encoder).eval()
    saved = save_model(runtime, tmp_path / "models", ModelMetadata(
        category="bottle", scoring=cfg, threshold=Threshold(1.25, "false_alarm_rate", 3, 0),
        prompts=build_prompts("bottle"), version="v7"))
    db_url = f"sqlite:///{tmp_path / 'clad.db'}"
    upgrade(make_engine(db_url))
    env = {"CLAD_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}

    result = _clad("model", "register", str(saved), "--activate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bottle v7: active (threshold 1.25)" in result.stdout
    # Registering again is harmless: the version is recorded once.
    assert _clad("model", "register", str(saved), env=env, cwd=tmp_path).returncode == 0
    with make_session_factory(make_engine(db_url))() as session:
        active = active_model_version(session, "bottle")
        assert active is not None and active.version == "v7" and active.path == str(saved)
    listing = _clad("model", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0 and "v7" in listing.stdout and "active" in listing.stdout

    missing = _clad("model", "register", str(tmp_path / "nope"), env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_list_shows_whole_version_ids_status_first_at_80_columns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    encoder = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    reference = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    runtime = build_runtime([reference], cfg, encoder=encoder).eval()
    db_url = f"sqlite:///{tmp_path / 'clad.db'}"
    upgrade(make_engine(db_url))
    env = {"CLAD_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    versions = ["20261207T221503123456-retrain", "20261207T221504654321-retrain"]
    for i, version in enumerate(versions):
        saved = save_model(runtime, tmp_path / "models", ModelMetadata(
            category="transistor", scoring=cfg,
            threshold=Threshold(1.25, "false_alarm_rate", 3, 0),
            prompts=build_prompts("transistor"), version=version))
        args = ["model", "register", str(saved)] + (["--activate"] if i == 0 else [])
        assert _clad(*args, env=env, cwd=tmp_path).returncode == 0
    listing = _clad("model", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "status" in line)
    assert header.strip("┃│ ").startswith("status")
    rows = {v: [c.strip() for c in next(line for line in lines if v in line).split("│")[1:]]
            for v in versions}  # whole ids: each found on a line of its own row
    assert rows[versions[0]][:2] == ["active", versions[0]]
    assert rows[versions[1]][:2] == ["candidate", versions[1]]
