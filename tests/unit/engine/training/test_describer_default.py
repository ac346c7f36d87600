"""The default describer: the "unclear" cut, its calibration, the shipped forest and its
leave-one-source-out evaluation."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from engine.defects.defect_kinds import GENERIC_KINDS, UNCLEAR, UNCLEAR_TEXT
from engine.defects.describer import (
    Description,
    RegionDescriber,
    describe_regions,
    mark_unclear,
    search_descriptions,
)
from engine.defects.describer_artifacts import DEFAULT_DIR, FOREST, load_default_describer
from engine.defects.kind_forest import from_sklearn
from engine.defects.region_features import N_FEATURES
from engine.defects.shape_describer import ShapeDescriber, pixel_input
from engine.training.describer_default import Rows, leave_one_source_out, unclear_cut

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


def _grouped(kind_confidence: float, group_confidence: float) -> Description:
    return dataclasses.replace(_desc("scratch", kind_confidence),
                               group_confidence=group_confidence,
                               group_text="a scratch or a cut", group_kind="scratch")  # fmt: skip


def test_a_region_unsure_of_its_kind_but_sure_of_its_group_names_the_group() -> None:
    sure, hedged, unsure = _grouped(0.8, 0.9), _grouped(0.4, 0.7), _grouped(0.3, 0.5)
    out = mark_unclear([sure, hedged, unsure], 0.6, group_below=0.6)
    assert out[0] == sure  # the kind is sure enough: named by its kind
    assert (out[1].kind, out[1].text, out[1].confidence) == ("scratch", "a scratch or a cut", 0.7)
    assert (out[1].runner_up_kind, out[1].runner_up,
            out[1].runner_up_confidence) == ("scratch", "a scratch", 0.4)  # the best kind
    assert (out[2].kind, out[2].text, out[2].confidence) == (UNCLEAR, UNCLEAR_TEXT, 0.3)
    # no group cut (a product's own describer, a default one saved before groups): the
    # kind cut alone decides
    assert mark_unclear([hedged], 0.6)[0].text == UNCLEAR_TEXT


class _FixedShares:
    """A describer whose kind shares are given (one row per region)."""

    joint_dim = 2

    def __init__(self, shares: list[list[float]]) -> None:
        self.shares = torch.tensor(shares)
        self.vocab_owner = torch.arange(self.shares.shape[1])

    def eval(self) -> _FixedShares:
        return self

    def region_embeddings(self, patch_emb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        raise AssertionError("not used here")

    def kind_probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        return self.shares

    def phrase_scores(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(self.shares), len(self.vocab_owner))


def test_the_group_answer_joins_the_likeliest_groups_two_likeliest_kinds() -> None:
    kinds = ["scratch", "hole", "cut", "crack", "stain"]
    d = _FixedShares([[0.2, 0.35, 0.25, 0.15, 0.05],   # hole alone; the line group: 0.6
                      [0.0, 0.55, 0.0, 0.0, 0.45],     # hole and stain: both spots
                      [0.0, 0.3, 0.0, 0.7, 0.0]])      # the line group is the crack alone
    out = search_descriptions(d, torch.zeros(3, 2), kinds, [f"a {k}" for k in kinds])
    assert out[0].kind == "hole" and out[0].confidence == pytest.approx(0.35)
    assert (out[0].group_kind, out[0].group_text) == ("cut", "a cut or a scratch")
    assert out[0].group_confidence == pytest.approx(0.6)
    assert (out[1].group_text, out[1].group_confidence) == ("a hole or a stain", pytest.approx(1.0))
    assert (out[2].group_text, out[2].group_kind) == ("a crack", "crack")


def test_a_group_answer_is_right_when_the_true_kind_is_in_the_group() -> None:
    from engine.training.describer_default import group_answers

    k = GENERIC_KINDS.index
    probs = np.zeros((2, len(GENERIC_KINDS)))
    probs[0, [k("scratch"), k("cut"), k("hole")]] = 0.3, 0.3, 0.4  # lines 0.6, spots 0.4
    probs[1, [k("dent"), k("stain")]] = 0.45, 0.55  # spots 0.55
    conf, right = group_answers(probs, np.array([k("crack"), k("fold")]))
    assert conf == pytest.approx([0.6, 0.55]) and right.tolist() == [True, False]


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
    # a cut names all answers at its confidence: 0.5 would name 2 right of 4, not 2 of 3
    tied = np.array([0.9, 0.9, 0.5, 0.5])
    assert unclear_cut(tied, np.array([True, True, False, False]), 0.6) == 0.9
    assert unclear_cut(tied, np.array([True, True, True, False]), 0.6) == 0.5
    assert unclear_cut(np.array([]), np.array([], bool)) > 1  # nothing left: name none


def test_the_shipped_default_describer_names_the_generic_kinds() -> None:
    loaded = load_default_describer()
    assert loaded.source == "default" and loaded.vocabulary.keys == list(GENERIC_KINDS)
    assert isinstance(loaded.describer, ShapeDescriber)
    assert loaded.unclear_below is not None and 0 < loaded.unclear_below < 1
    assert loaded.group_below is not None and 0 < loaded.group_below < 1
    assert loaded.features["encoder"] == "pixels"
    assert len(loaded.identity) == 16
    assert (DEFAULT_DIR / FOREST).stat().st_size < 500_000  # ships in the package
    phrases, _ = loaded.vocabulary.phrases()
    assert all("<object>" not in p for p in phrases)


def _shape_describer(seed: int = 0) -> ShapeDescriber:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, N_FEATURES))
    rf = RandomForestClassifier(10, random_state=0).fit(x, (x[:, 0] > 0).astype(int))
    return ShapeDescriber(from_sklearn(rf, 2), [0, 0, 1, 1])


def test_the_shape_describer_describes_regions_of_pixels_with_the_cut() -> None:
    d = _shape_describer()
    frame = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 2:8, 2:8] = masks[1, 20:30, 10:30] = True
    plain = describe_regions(d, pixel_input(frame), masks, ["crack", "hole"],
                             ["a crack", "a long crack", "a hole", "a small hole"])  # fmt: skip
    assert [x.kind in {"crack", "hole"} for x in plain] == [True, True]
    assert {x.text for x in plain} <= {"a crack", "a hole"}  # a kind reads as its first phrasing
    assert all(x.embedding.shape == (N_FEATURES,) for x in plain)
    cut = min(x.confidence for x in plain) + 1e-6
    marked = describe_regions(d, pixel_input(frame), masks, ["crack", "hole"],
                              ["a crack", "a long crack", "a hole", "a small hole"],
                              unclear_below=cut)  # fmt: skip
    assert [x.kind == UNCLEAR for x in marked] == [x.confidence < cut for x in plain]


def test_leave_one_source_out_never_trains_on_the_evaluated_source() -> None:
    """Each source's kinds are separable only by a feature the other sources lack: a
    leak would score 100%, a true hold-out cannot."""
    rng = np.random.default_rng(0)
    n, parts = 60, []
    for s in range(4):
        x = rng.normal(size=(n, 6, N_FEATURES)).astype(np.float32)
        kind = rng.integers(0, 3, n)
        x[:, :, 5 + s] = kind[:, None] * 10.0  # only this source carries its kinds here
        parts.append(Rows(x, kind, np.full(n, s), np.zeros(n, bool), np.full(n, "k")))
    res = leave_one_source_out(Rows.concat(parts), seed=0, precision=0.5)
    accs = [e["mask"]["accuracy"] for e in res["sources"].values()]
    assert len(accs) == 4 and max(accs) < 70
    assert 0 <= res["named_share"] <= 100
    # every held-out answer is named by its kind, by its group, or unclear
    assert res["named_share"] + res["group_named_share"] + res["unclear_share"] == \
        pytest.approx(100)
    assert 0 < res["group_below"] <= 1
    # the cuts set without each source, on its answers: every answer counted once
    unseen = res["unseen_cuts"]
    assert len(unseen["sources"]) == 4
    for e in unseen["sources"].values():
        assert e["answers"] == n * 3  # the three training views
        assert e["named_right"] <= e["named"] and e["grouped_right"] <= e["grouped"]
        assert e["named"] + e["grouped"] <= e["answers"]
    total = sum(e["answers"] for e in unseen["sources"].values())
    named = sum(e["named"] for e in unseen["sources"].values())
    assert unseen["named_share"] == pytest.approx(100 * named / total)


def test_a_map_blob_holds_the_defect_and_grows_a_thin_line_into_a_band() -> None:
    from engine.training.describer_default import map_blob

    line = np.zeros((256, 256), np.uint8)
    line[128, 60:200] = 1
    for seed in range(5):
        b = map_blob(line, np.random.default_rng(seed))
        assert b[line > 0].all()
        rows = np.flatnonzero(b[:, 128])
        assert 4 <= len(rows) <= 40 and b.sum() < 40 * 256  # a band around it, not the frame


def test_kshot_views_go_to_their_real_regions_and_the_rest_keep_the_blob(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Real rows come category by category in SOURCES order; each category's k-shot views
    list its ground-truth regions in the same order. Unmatched and drawn rows hold their
    (refined) map-blob views in the k-shot slots."""
    import engine.training.kshot_regions as kr
    from engine.training.describer_default import SOURCES, add_kshot_views

    cats = [rel for rels in SOURCES.values() for rel in rels]
    for rel in cats[:2]:  # two categories present, the rest absent
        (tmp_path / rel).mkdir(parents=True)
    n_real = {cats[0]: 3, cats[1]: 2}
    x = np.zeros((8, 6, N_FEATURES), np.float32)
    x[:, 1, 0] = np.arange(8) + 100  # blob views, told apart by row
    x[:, 4, 0] = np.arange(8) + 200
    drawn = np.array([False, False, False, True, False, False, True, True])  # cat0 real x3,
    # cat0 drawn, cat1 real x2, cat1 drawn, plain parts drawn
    rows = Rows(x, np.zeros(8, int), np.array([0, 0, 0, 0, 1, 1, 1, 4]), drawn,
                np.full(8, "k"))  # fmt: skip

    def fake(category, cache_dir, progress=True):  # type: ignore[no-untyped-def]
        rel = str(category.relative_to(tmp_path))
        n = n_real[rel]
        kx = np.full((n, 2, N_FEATURES), -1.0, np.float32)
        kx[:, 0, 0] = np.arange(n) + (10 if rel == cats[0] else 20)
        kx[:, 1, 0] = kx[:, 0, 0] + 1000
        return kx, np.arange(n) != 1  # the second region of each is missed by the map

    monkeypatch.setattr(kr, "cached_kshot_views", fake)
    out, matched = add_kshot_views(rows, tmp_path, None, progress=False)
    assert out.x.shape == (8, 8, N_FEATURES)
    assert matched.tolist() == [True, False, True, False, True, False, False, False]
    assert out.x[:, 6, 0].tolist() == [10, 101, 12, 103, 20, 105, 106, 107]
    assert out.x[:, 7, 0].tolist() == [1010, 201, 1012, 203, 1020, 205, 206, 207]
    assert np.array_equal(out.x[:, :6], x)


def test_the_wide_blob_view_leaves_the_draws_that_follow_as_they_were() -> None:
    """_views draws the wide blob from a child generator: a rows build with it makes the
    same drawings as one without (the v3 rows stay bit for bit); the wide blob holds the
    defect and is wider than map_blob's."""
    from engine.training.describer_default import (
        WIDE_SIGMA,
        RowOptions,
        _views,
        map_blob,
    )

    img = np.full((256, 256, 3), 150, np.uint8)
    line = np.zeros((256, 256), np.uint8)
    cv2.line(line, (60, 128), (196, 128), 1, 3)
    img[line > 0] = 30
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    x = _views(img, line, a)
    assert x.shape == (6, N_FEATURES)
    map_blob(line, b)  # the only draw the other views take
    assert a.random() == b.random()
    wide = map_blob(line, np.random.default_rng(0), WIDE_SIGMA)
    assert wide[line > 0].all() and wide.sum() > map_blob(line, np.random.default_rng(0)).sum()
    assert RowOptions().key() == "" and RowOptions(0.01, 0.3, 0.15).key() == "-e0.01-c0.3-d0.15"


def test_the_unseen_cuts_of_a_source_are_set_on_the_other_sources_answers_only() -> None:
    from engine.training.describer_default import _unseen_cuts

    # source 0: sure and right, or unsure and wrong; source 1: fairly sure and right
    conf = np.array([0.9] * 10 + [0.5] * 10 + [0.7] * 10)
    correct = np.array([True] * 10 + [False] * 10 + [True] * 10)
    source = np.array([0] * 20 + [1] * 10)
    no_group = np.zeros(30), np.zeros(30, bool)
    pooled = unclear_cut(conf, correct, 0.6)
    assert pooled == 0.5  # 20 of the 30 right: the pooled cut names everything
    res = _unseen_cuts(conf, correct, *no_group, source, 0.6)
    # without source 1, only 0.9 is right often enough: source 1's 0.7 goes unnamed
    s1 = res["sources"]["transistor"]
    assert s1["unclear_below"] == 0.9 and s1["named"] == 0
    # without source 0, 0.7 is right: source 0's 0.9 answers named (all right), 0.5 not
    s0 = res["sources"]["magnetic_tile"]
    assert s0["unclear_below"] == 0.7 and (s0["named"], s0["named_right"]) == (10, 10)
    assert res["named_accuracy"] == 100 and res["named_share"] == pytest.approx(100 / 3)
    assert res["group_named_accuracy"] is None and res["group_named_share"] == 0


def test_the_group_share_calibrated_on_is_the_one_the_describer_answers_with() -> None:
    """The group cut is set on `group_answers` (training) and applied to the share
    `search_descriptions` gives (run time): two computations, one number."""
    import torch

    from engine.defects.describer import _likeliest_group
    from engine.training.describer_default import group_answers

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(GENERIC_KINDS), 0.3), size=200)
    probs[:20, 5:] = 0  # some kinds without any share
    probs /= probs.sum(axis=1, keepdims=True)
    share, _ = group_answers(probs, np.zeros(len(probs), int))
    for p, s in zip(probs, share, strict=True):
        t = torch.from_numpy(p)
        group = _likeliest_group(list(np.argsort(-p)), t, list(GENERIC_KINDS))
        assert float(t[group].sum()) == pytest.approx(s)
