"""The default describer: the "unclear" cut, its calibration, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.defect_kinds import GENERIC_KINDS, UNCLEAR, UNCLEAR_TEXT
from engine.describer import Description, RegionDescriber, describe_regions, mark_unclear
from engine.describer_artifacts import DEFAULT_DIR, WEIGHTS, load_default_describer
from engine.describer_default import calibrated_tau, softmax, unclear_cut

pytestmark = pytest.mark.unit


def _desc(kind: str, confidence: float) -> Description:
    return Description(kind=kind, text=f"a {kind}", confidence=confidence,
                       runner_up_kind="hole", runner_up="a hole",
                       runner_up_confidence=1 - confidence, embedding=np.zeros(2))  # fmt: skip


def test_below_the_cut_a_region_reads_unclear_with_its_best_guess_kept() -> None:
    sure, unsure = _desc("crack", 0.8), _desc("scratch", 0.3)
    out = mark_unclear([sure, unsure], 0.5)
    assert out[0] == sure
    assert (out[1].kind, out[1].text, out[1].confidence) == (UNCLEAR, UNCLEAR_TEXT, 0.3)
    assert (out[1].runner_up_kind, out[1].runner_up) == ("scratch", "a scratch")
    assert mark_unclear([unsure], None) == [unsure]  # no cut: always a word


def test_describe_regions_applies_the_cut() -> None:
    torch.manual_seed(0)
    d = RegionDescriber(6, 10, torch.randn(4, 10), [0, 0, 1, 1], joint_dim=8, hidden=16, grid=8)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 2:8, 2:8] = masks[1, 20:30, 10:30] = True
    emb = torch.randn(1, 6, 8, 8)
    plain = describe_regions(d, emb, masks, ["crack", "hole"], ["a", "b", "c", "d"])
    assert {x.kind for x in plain} <= {"crack", "hole"}
    cut = min(x.confidence for x in plain) + 1e-6  # the least sure region falls under it
    marked = describe_regions(d, emb, masks, ["crack", "hole"], ["a", "b", "c", "d"],
                              unclear_below=cut)  # fmt: skip
    assert [x.kind == UNCLEAR for x in marked] == [x.confidence < cut for x in plain]
    assert sum(x.kind == UNCLEAR for x in marked) == 1


def test_unclear_cut_keeps_descriptions_right_at_least_half_the_time() -> None:
    conf = np.array([0.9, 0.8, 0.6, 0.4, 0.2])
    correct = np.array([True, True, False, False, False])
    # precision of the top-n: 1, 1, 2/3, 1/2, 2/5 -> the lowest confidence still >= 1/2
    assert unclear_cut(conf, correct) == pytest.approx(0.4)
    assert unclear_cut(conf, correct, precision=0.9) == pytest.approx(0.8)
    assert unclear_cut(conf, np.zeros(5, bool)) > 0.9  # never right: everything unclear


def test_the_shipped_default_describer_names_the_generic_kinds() -> None:
    loaded = load_default_describer()
    assert loaded.source == "default" and loaded.vocabulary.keys == list(GENERIC_KINDS)
    assert loaded.unclear_below is not None and 0 < loaded.unclear_below < 1
    assert loaded.features["backbone"] and loaded.features["stages"]
    assert len(loaded.identity) == 16
    assert (DEFAULT_DIR / WEIGHTS).stat().st_size < 500_000  # ships in the package
    phrases, _ = loaded.vocabulary.phrases()
    assert all("<object>" not in p for p in phrases)


def test_the_calibrated_temperature_follows_how_often_the_best_kind_is_right() -> None:
    rng = np.random.default_rng(0)
    sims = rng.uniform(-0.2, 0.2, size=(400, 5))
    best = sims.argmax(axis=1)
    always_right = calibrated_tau(sims, best)
    mostly_wrong = calibrated_tau(sims, (best + 1 + rng.integers(0, 4, 400)) % 5)
    assert always_right < 0.05 < 0.5 < mostly_wrong  # sure when right, flat when not
    probs = softmax(sims, always_right)
    assert np.allclose(probs.sum(axis=1), 1) and (probs.argmax(axis=1) == best).all()
