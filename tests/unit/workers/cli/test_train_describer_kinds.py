"""`clad train-describer` on a category no vocabulary file knows: its defect folders are
the kinds, a kind of one image is learnt, images without a mask are skipped and counted.
Fake features and text (the encoders are tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests.synthetic_category import FakeText, KindFeatures, make_category
from workers.cli.describe import register

pytestmark = pytest.mark.unit


class SavedFeatures(KindFeatures):
    pool, tag, grid = 1, "fake", 8


def test_train_describer_learns_the_folders_of_any_category(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import engine.scoring.text_encoder as text_encoder
    import engine.training.describer_train as describer_train

    monkeypatch.setattr(describer_train, "make_feature_cache", lambda **_: SavedFeatures())
    monkeypatch.setattr(text_encoder, "load_text_encoder", lambda *a, **k: FakeText())
    cat = make_category(tmp_path)
    (cat / "test" / "damaged_case").mkdir()  # a defect folder with no masks
    cv2.imwrite(str(cat / "test" / "damaged_case" / "000.png"), np.zeros((32, 32), np.uint8))
    app = typer.Typer()
    register(app)
    out = tmp_path / "describer"
    result = CliRunner().invoke(app, ["train-describer", "--data", str(tmp_path), "--category",
                                      "gizmo", "--out", str(out), "--steps", "5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 1 defect image(s) without a ground-truth mask (kinds: damaged_case)" \
        in result.output
    assert "kinds: bent_lead (4 regions), cut_lead (3 regions), misplaced (1 regions)" \
        in result.output
    saved = json.loads((out / "describer.json").read_text())
    assert saved["kinds"] == ["bent_lead", "cut_lead", "misplaced"]
    assert "a misplaced gizmo" in saved["phrases"]


def test_a_category_without_any_mask_is_a_clear_error(tmp_path: Path) -> None:
    cat = tmp_path / "gizmo" / "test" / "dent"
    cat.mkdir(parents=True)
    cv2.imwrite(str(cat / "000.png"), np.zeros((32, 32), np.uint8))
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["train-describer", "--data", str(tmp_path), "--category",
                                      "gizmo", "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2
    assert "no defect image with a ground-truth mask" in result.output
