"""The describer step's rules without services: what the minimum asks for, how kinds
are read from labels, how labelled regions are split by frame."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np

from pipeline.storage.description_labels import DescribedRegion
from workers.retraining.describer_step import (
    LabelledRegion,
    describer_line,
    kinds_of,
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
