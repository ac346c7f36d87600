"""MVTec-layout reader and the k-shot evaluation on a tiny synthetic category."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.evaluation.evaluate import evaluate_category, score_split, score_split_online
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import ContextConfig
from engine.training.datasets import find_categories, load_rgb, split_category

pytestmark = pytest.mark.unit


def _stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:96, :96][1]
    return (128 + 60 * np.sin(xx / 3.0) + rng.normal(0, 4, (96, 96))).clip(0, 255).astype(np.uint8)


@pytest.fixture()
def category(tmp_path: Path) -> Path:
    cat = tmp_path / "data" / "stripes"
    (cat / "test" / "good").mkdir(parents=True)
    (cat / "test" / "blob").mkdir()
    (cat / "ground_truth" / "blob").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(cat / "test" / "good" / f"{i:03d}.png"), _stripes(i))
    for i in range(3):
        img, mask = _stripes(10 + i), np.zeros((96, 96), np.uint8)
        cv2.circle(img, (30 + 15 * i, 50), 8, 0, -1)
        cv2.circle(mask, (30 + 15 * i, 50), 8, 255, -1)
        cv2.imwrite(str(cat / "test" / "blob" / f"{i:03d}.png"), img)
        cv2.imwrite(str(cat / "ground_truth" / "blob" / f"{i:03d}_mask.png"), mask)
    return cat


def test_protocol_without_train_folder(category: Path) -> None:
    split = split_category(category, 1)
    assert split.references == [category / "test" / "good" / "000.png"]
    assert split.reference_source == "test/good"
    assert len(split.evaluated) == 6  # 3 good left + 3 anomalous
    assert all(s.mask_path is not None for s in split.evaluated if s.label == 1)
    assert find_categories(category.parent) == [category] == find_categories(category)


def test_protocol_with_train_folder(category: Path) -> None:
    (category / "train" / "good").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(category / "train" / "good" / f"{i:03d}.png"), _stripes(20 + i))
    split = split_category(category, 2)
    assert split.reference_source == "train/good" and len(split.references) == 2
    assert len(split.evaluated) == 7  # nothing of test/ is held out
    with pytest.raises(ValueError, match="shots"):
        split_category(category, 4)


def test_evaluate_category_detects_blobs(category: Path) -> None:
    cfg = ScoringConfig(input_size=96, aug_shifts=(), sigma=2.0)
    res = evaluate_category(category, 1, cfg)
    assert (res.n_references, res.n_evaluated, res.n_anomalous) == (1, 6, 3)
    assert res.image_auroc == 100.0
    assert res.pixel_auroc > 90.0


def test_online_scoring_returns_split_order(category: Path) -> None:
    """With a context that never fills, the line protocol must give exactly the plain
    scores, in split order, whatever order the frames were scored in."""
    cfg = ScoringConfig(input_size=96, aug_shifts=(), sigma=2.0)
    split = split_category(category, 1)
    rt = build_runtime([load_rgb(p, 96) for p in split.references], cfg)
    plain_scores, plain_maps = score_split(rt, split, 96, batch=2)
    scores, maps = score_split_online(rt, split, 96, ContextConfig(min_frames=99), batch=2,
                                      seed=3)  # fmt: skip
    np.testing.assert_allclose(scores, plain_scores, rtol=1e-5)
    np.testing.assert_allclose(maps, plain_maps, rtol=1e-4, atol=1e-6)


def test_evaluate_category_with_line_context(category: Path) -> None:
    cfg = ScoringConfig(input_size=96, aug_shifts=(), sigma=2.0)
    res = evaluate_category(category, 1, cfg, context=ContextConfig(min_frames=2))
    assert res.context == "online" and res.n_evaluated == 6
    assert res.image_auroc == 100.0
    assert res.pixel_auroc > 90.0


def test_clad_eval_scores_with_the_worker_context_by_default(category: Path,
                                                             tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.settings import LineContextSettings
    from workers.cli.main import _register_subcommands, app

    _register_subcommands()
    out = tmp_path / "eval.json"
    args = ["eval", "--data", str(category), "--input-size", "96", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["line_context"]["max_frames"] == LineContextSettings().line_context_frames
    assert payload["categories"][0]["context"] == "online"
    assert CliRunner().invoke(app, [*args, "--no-context"]).exit_code == 0
    payload = json.loads(out.read_text())
    assert payload["line_context"] is None and payload["categories"][0]["context"] == "off"
