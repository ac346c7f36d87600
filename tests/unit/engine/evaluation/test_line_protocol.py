"""The line protocol: stream construction (share, seeding, references, skip rule), its
scoring against score_and_offer, and `clad eval --protocol line` on a tiny folder."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.evaluation.evaluate import evaluate_category, metric_map
from engine.evaluation.line_protocol import (
    FILLER,
    MIN_SPARE_FRAMES,
    build_stream,
    score_stream,
    skip_reason,
    spare_frames,
)
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import ContextConfig, LineContext, score_and_offer
from engine.training.datasets import CategorySplit, Sample, load_rgb, split_category

pytestmark = pytest.mark.unit


def _split(n_good: int, n_bad: int, refs: int = 1) -> tuple[CategorySplit, list[Path]]:
    train = [Path(f"/c/train/good/{i:03d}.png") for i in range(40)]
    evaluated = [Sample(Path(f"/c/test/good/{i:03d}.png"), 0, "good", None)
                 for i in range(n_good)]  # fmt: skip
    evaluated += [Sample(Path(f"/c/test/bad/{i:03d}.png"), 1, "bad", Path(f"/m/{i}.png"))
                  for i in range(n_bad)]  # fmt: skip
    split = CategorySplit("c", train[:refs], evaluated, "train/good")
    return split, train[refs:]


def test_stream_holds_every_test_image_once_at_the_defect_share() -> None:
    split, spare = _split(n_good=30, n_bad=20)
    stream = build_stream(split, spare, defect_share=0.1, lead_in=32, seed=0)
    tests = [j for _p, j in stream.frames if j != FILLER]
    assert sorted(tests) == list(range(50))
    assert all(split.evaluated[j].path == p for p, j in stream.frames if j != FILLER)
    assert all(j == FILLER for _p, j in stream.frames[:32])  # the lead-in is normal
    assert len(stream.frames) == 32 + 200  # 20 defective = 10% of 200 after the lead-in
    labels = [s.label for s in split.evaluated]
    assert stream.defect_share(labels) == pytest.approx(0.1)
    assert stream.n_fillers == 32 + 150 and stream.n_spare == 39
    # a higher share: fewer normal frames around the same test images
    assert len(build_stream(split, spare, 0.25, lead_in=0).frames) == 80


def test_stream_with_few_defects_adds_no_frames_below_the_test_set() -> None:
    split, spare = _split(n_good=60, n_bad=2)
    stream = build_stream(split, spare, defect_share=0.1, lead_in=5)
    assert len(stream.frames) == 5 + 62  # the test images alone are under the share
    assert stream.defect_share([s.label for s in split.evaluated]) == pytest.approx(2 / 62)


def test_stream_never_holds_a_reference_and_cycles_the_spare_frames() -> None:
    split, spare = _split(n_good=10, n_bad=30, refs=4)
    stream = build_stream(split, spare, defect_share=0.1, lead_in=32)
    fillers = [p for p, j in stream.frames if j == FILLER]
    assert not set(fillers) & set(split.references)
    assert set(fillers) == set(spare)  # 32 + 260 fillers draw on every spare frame
    # one permutation per pass: no frame twice within a pass of len(spare) frames
    for start in range(0, len(fillers) - len(spare), len(spare)):
        assert len(set(fillers[start : start + len(spare)])) == len(spare)
    with pytest.raises(ValueError, match="reference"):
        build_stream(split, spare + split.references[:1], 0.1)


def test_stream_is_seeded() -> None:
    split, spare = _split(n_good=20, n_bad=20)
    a = build_stream(split, spare, 0.1, seed=3).frames
    assert a == build_stream(split, spare, 0.1, seed=3).frames
    assert a != build_stream(split, spare, 0.1, seed=4).frames


def test_skip_rule_and_bad_share() -> None:
    split, spare = _split(n_good=5, n_bad=5)
    assert skip_reason(spare[:MIN_SPARE_FRAMES]) is None
    reason = skip_reason(spare[: MIN_SPARE_FRAMES - 1])
    assert reason is not None and f"{MIN_SPARE_FRAMES - 1} spare" in reason
    with pytest.raises(ValueError, match="spare"):
        build_stream(split, spare[:3], 0.1)
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="defect share"):
            build_stream(split, spare, share)


# ---------------------------------------------------------------- on real images


def _stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:96, :96][1]
    return (128 + 60 * np.sin(xx / 3.0) + rng.normal(0, 4, (96, 96))).clip(0, 255).astype(np.uint8)


def _category(root: Path, n_train: int) -> Path:
    cat = root / "stripes"
    for d in ("train/good", "test/good", "test/blob", "ground_truth/blob"):
        (cat / d).mkdir(parents=True)
    for i in range(n_train):
        cv2.imwrite(str(cat / "train" / "good" / f"{i:03d}.png"), _stripes(100 + i))
    for i in range(4):
        cv2.imwrite(str(cat / "test" / "good" / f"{i:03d}.png"), _stripes(i))
    for i in range(3):
        img, mask = _stripes(10 + i), np.zeros((96, 96), np.uint8)
        cv2.circle(img, (30 + 15 * i, 50), 8, 0, -1)
        cv2.circle(mask, (30 + 15 * i, 50), 8, 255, -1)
        cv2.imwrite(str(cat / "test" / "blob" / f"{i:03d}.png"), img)
        cv2.imwrite(str(cat / "ground_truth" / "blob" / f"{i:03d}_mask.png"), mask)
    return cat


CFG = ScoringConfig(input_size=96, aug_shifts=(), aug_rotations=(), sigma=2.0)


def test_score_stream_equals_the_worker_path_frame_by_frame(tmp_path: Path) -> None:
    """The shortcut for normal frames (embed once, never context-searched) must give the
    test images exactly what score_and_offer on the whole stream gives them."""
    cat = _category(tmp_path, n_train=MIN_SPARE_FRAMES + 1)
    split = split_category(cat, 1)
    spare = spare_frames(cat, split)
    assert len(spare) == MIN_SPARE_FRAMES and split.references[0] not in spare
    ctx = ContextConfig(max_frames=8, search_frames=4, min_frames=2)
    stream = build_stream(split, spare, defect_share=0.1, lead_in=8)
    rt = build_runtime([load_rgb(p, 96) for p in split.references], CFG)
    scores, maps = score_stream(rt, split, stream, 96, ctx, metric_map, batch=4)

    line: LineContext = LineContext(ctx)
    want = np.zeros(len(split.evaluated), np.float32)
    for t, start in enumerate(range(0, len(stream.frames), 4)):
        chunk = stream.frames[start : start + 4]
        imgs = np.stack([load_rgb(p, 96) for p, _j in chunk])
        out = score_and_offer(rt, torch.from_numpy(imgs), line, now=float(t))
        for k, (_p, j) in enumerate(chunk):
            if j != FILLER:
                want[j] = out.scores[k]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    assert maps.shape == (7, 256, 256)
    # the context was used: the scores differ from references-only ones
    plain = rt(torch.from_numpy(np.stack([load_rgb(s.path, 96) for s in split.evaluated])))
    assert not np.allclose(scores, plain.scores.detach().numpy(), rtol=1e-3)


def test_evaluate_category_line_and_skip(tmp_path: Path) -> None:
    ctx = ContextConfig(max_frames=8, search_frames=4, min_frames=2)
    cat = _category(tmp_path / "ok", n_train=MIN_SPARE_FRAMES + 1)
    res = evaluate_category(cat, 1, CFG, context=ctx, protocol="line")
    assert res.skipped is None and res.context == "line" and res.n_evaluated == 7
    assert res.stream_frames == 8 + 30  # 3 defective = 10% of 30
    assert res.stream_defect_share == pytest.approx(0.1)
    assert res.image_auroc == 100.0 and res.pixel_auroc > 90.0
    few = _category(tmp_path / "few", n_train=MIN_SPARE_FRAMES)  # 19 spare at K=1
    res = evaluate_category(few, 1, CFG, context=ctx, protocol="line")
    assert res.skipped is not None and "19 spare" in res.skipped
    assert math.isnan(res.image_auroc)
    with pytest.raises(ValueError, match="line-context"):
        evaluate_category(cat, 1, CFG, protocol="line")


def test_clad_eval_protocol_line_on_a_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workers.cli.main import _register_subcommands, app

    _register_subcommands()
    root = tmp_path / "data"
    _category(root / "a", n_train=MIN_SPARE_FRAMES + 1)
    _category(root / "b", n_train=3)
    for sub in ("a", "b"):  # one MVTec-layout root with two categories
        (root / sub / "stripes").rename(root / f"stripes_{sub}")
    out = tmp_path / "eval.json"
    args = ["eval", "--data", str(root), "--input-size", "96", "--json", str(out),
            "--protocol", "line", "--defect-share", "0.2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["protocol"] == "line" and payload["defect_share"] == 0.2
    a, b = payload["categories"]
    assert a["category"] == "stripes_a" and a["context"] == "line" and a["skipped"] is None
    assert a["stream_defect_share"] == pytest.approx(0.2)
    assert a["image_auroc"] is not None and a["image_auroc"] > 50
    assert b["skipped"] is not None and "2 spare" in b["skipped"]
    assert b["image_auroc"] is None
    assert payload["mean"]["image_auroc"] == pytest.approx(a["image_auroc"])  # b left out
    assert "skipped" in result.output
    # aliases, and a contradiction is refused
    assert CliRunner().invoke(app, [*args[:-4], "--no-context"]).exit_code == 0
    assert json.loads(out.read_text())["protocol"] == "pure"
    bad = CliRunner().invoke(app, [*args, "--no-context"])
    assert bad.exit_code != 0 and "contradicts" in bad.output


def test_subset_keeps_the_defect_share_and_is_seeded() -> None:
    from engine.evaluation.evaluate import subset_samples

    split, _spare = _split(n_good=30, n_bad=90)
    sub = subset_samples(split.evaluated, 40)
    assert len(sub) == 40 and sum(s.label for s in sub) == 30  # 75% defective, as all 120
    assert sub == subset_samples(split.evaluated, 40)
    assert subset_samples(split.evaluated, 0) == split.evaluated
