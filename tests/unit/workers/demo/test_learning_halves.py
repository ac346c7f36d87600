"""The demo's learning pass: which defect images are labelled and which held back, and
how regions are counted before / after."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

from workers.demo.learning import Tally, halves


def test_every_other_image_of_each_defect_folder_is_labelled_good_ones_never() -> None:
    root = Path("/data/bottle/test")
    files = [root / "good" / "000.png", root / "good" / "001.png",
             root / "crack" / "000.png", root / "crack" / "001.png", root / "crack" / "002.png",
             root / "hole" / "000.png"]
    names = {uuid.uuid4(): ("bottle", f) for f in files}
    names[uuid.uuid4()] = ("part", Path("/parts/defect/003-scratch.png"))  # not MVTec: neither
    label, hold = halves(names)
    assert sorted(str(p.relative_to(root)) for _pr, p in label.values()) == [
        "crack/000.png", "crack/002.png", "hole/000.png"]
    assert [(pr, str(p.relative_to(root))) for pr, p in hold] == [("bottle", "crack/001.png")]


def test_a_region_counts_as_a_kind_a_fact_description_or_nothing() -> None:
    tally = Tally()
    for kind, text in (("crack", "a crack"), ("hole", "a hole"),
                       ("unclear", "unnamed: a dark thin line, 62 px long, at the left edge"),
                       ("unclear", "unclear defect"), (None, None)):
        tally.add(SimpleNamespace(kind=kind, description=text), "crack")
    assert (tally.regions, tally.kind, tally.facts, tally.nothing, tally.folder_kind) == \
        (5, 2, 1, 2, 1)
    assert tally.row() == ["5", "2", "1", "2", "1 (20%)"]
