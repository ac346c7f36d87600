"""The describer step's rules without services: what the minimum asks for, how kinds
are read from labels, how labelled regions are split by frame."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.storage.description_labels import DescribedRegion
from workers.retraining.describer_step import (
    DescriberOptions,
    LabelledRegion,
    describer_line,
    kinds_of,
    labels_fingerprint,
    missing_minimum,
    split_by_frame,
)


def test_the_minimum_says_what_is_missing() -> None:
    assert missing_minimum({"scratch": 3, "dent": 3}, 2, 3) is None
    assert missing_minimum({"scratch": 5, "dent": 2, "hole": 1}, 2, 3) == (
        "needs 2 kinds with 3 labelled regions each; has scratch 5, dent 2, hole 1: "
        "name 1 more kind on 3 regions each")
    assert missing_minimum({}, 2, 3) == (
        "needs 2 kinds with 3 labelled regions each; has no labelled regions: "
        "name 2 more kinds on 3 regions each")


def _named(description: str, kind: str | None) -> DescribedRegion:
    return DescribedRegion(uuid.uuid4(), 1, 1, {"size": [1, 1], "counts": [0, 1]},
                           description, kind, "ann", datetime.now(UTC))


def test_kinds_come_from_the_label_else_its_folded_text() -> None:
    found, skipped = kinds_of([_named("a scratch", "scratch"), _named("Scratches ", None),
                               _named("a  Dent", None), _named("the", None),
                               _named("unclear", "unclear")])
    assert [k for _n, k in found] == ["scratch", "scratch", "dent"]
    assert skipped == {"no_kind": 1, "unclear": 1}


def _regions(kind: str, frames: int, per_frame: int = 1) -> list[LabelledRegion]:
    mask = np.ones((2, 2), bool)
    return [LabelledRegion(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{i}"), kind, mask)
            for i in range(frames) for _ in range(per_frame)]


def test_split_keeps_frames_whole_and_tests_every_kind_on_two_frames_or_more() -> None:
    regions = _regions("scratch", 10, per_frame=2) + _regions("dent", 2) + _regions("hole", 1)
    train, held = split_by_frame(regions, 0.3)
    assert len(train) + len(held) == len(regions)
    assert not {r.frame_id for r in train} & {r.frame_id for r in held}
    for kind in ("scratch", "dent"):  # tested and learnt
        assert any(r.kind == kind for r in held) and any(r.kind == kind for r in train)
    assert [r.kind for r in regions if r.kind == "hole"] == [r.kind for r in train
                                                             if r.kind == "hole"]
    # the same frames on the same side whatever else is labelled later
    more = regions + _regions("crack", 6)
    train2, held2 = split_by_frame(more, 0.3)
    assert {r.frame_id for r in held if r.kind == "scratch"} == \
        {r.frame_id for r in held2 if r.kind == "scratch"}


def test_the_retrain_line_reports_counts_figures_and_outcome() -> None:
    line = describer_line("tile", {"status": "kept", "regions_per_kind": {"scratch": 4},
                                   "champion_accuracy": 0.75, "challenger_accuracy": 0.5,
                                   "held_out_regions": 4, "reason": "challenger worse"})
    assert line == ("describer tile: kept; held-out kind accuracy champion 0.750 vs "
                    "challenger 0.500 on 4 regions; regions per kind: scratch 4; "
                    "challenger worse")


def test_a_promoted_describer_gets_a_version_of_its_own_and_the_parent_is_untouched(
        tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    import torch

    from engine.defects.describer import RegionDescriber
    from engine.defects.describer_artifacts import load_describer
    from engine.defects.vocabulary import Vocabulary
    from workers.retraining.describer_step import carry_describer, save_version_with_describer

    parent = tmp_path / "models" / "tile" / "v1"
    (parent / "runtime").mkdir(parents=True)
    (parent / "model.pt").write_bytes(b"weights")
    (parent / "runtime" / "model.onnx").write_bytes(b"graph")
    (parent / "config.json").write_text(json.dumps({"version": "v1", "category": "tile"}))
    (parent / "metrics.json").write_text(json.dumps({"held_out": {"image_auroc": 0.9}}))
    active = SimpleNamespace(path=str(parent), version="v1")
    vocab = Vocabulary("tile", "tile", {"scratch": ["a scratch"], "dent": ["a dent"]})
    torch.manual_seed(0)
    describer = RegionDescriber(6, 10, torch.randn(2, 10), [0, 1], joint_dim=8, hidden=16)
    staged, path = save_version_with_describer(active, tmp_path / "models", "tile", describer,
                                               vocab, {"input_size": 64},
                                               {"held_out_accuracy": 1.0})
    assert path.parent == parent.parent and path.name.endswith("-describer")
    assert not path.exists(), "staged until registered: models/tile/ holds registered ones"
    staged.rename(path)
    config = json.loads((path / "config.json").read_text())
    assert config == {"version": path.name, "category": "tile"}
    assert json.loads((path / "metrics.json").read_text())["describer"] == {
        "held_out_accuracy": 1.0}
    assert (path / "model.pt").read_bytes() == b"weights"
    assert (path / "runtime" / "model.onnx").read_bytes() == b"graph"
    assert load_describer(path).vocabulary.keys == ["scratch", "dent"]
    # the parent version is exactly as it was
    assert json.loads((parent / "config.json").read_text())["version"] == "v1"
    assert "describer" not in json.loads((parent / "metrics.json").read_text())
    assert sorted(p.name for p in parent.iterdir()) == ["config.json", "metrics.json",
                                                        "model.pt", "runtime"]
    # a scoring challenger saved from the new version keeps its describer
    child = tmp_path / "models" / "tile" / "v3"
    child.mkdir()
    carry_describer(path, child)
    assert load_describer(child).identity == load_describer(path).identity
    carry_describer(parent, tmp_path)  # a parent without a describer: nothing to carry
    assert not (tmp_path / "describer.pt").exists()


def test_the_labels_fingerprint_moves_with_a_region_or_a_kind_never_with_order() -> None:
    a, b = _named("scratch", "scratch"), _named("dent", "dent")
    named = [(a, "scratch"), (b, "dent")]
    options = DescriberOptions()
    same = labels_fingerprint(named, options)
    assert labels_fingerprint(list(reversed(named)), options) == same
    assert labels_fingerprint(named, DescriberOptions(dry_run=True, force=True)) == same
    assert labels_fingerprint([(a, "scratch"), (b, "scratch")], options) != same
    assert labels_fingerprint(named[:1], options) != same
    assert labels_fingerprint(named, DescriberOptions(steps=10)) != same
