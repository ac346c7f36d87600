from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from workers.demo.data import discover, synthetic_parts

pytestmark = pytest.mark.unit


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))


def test_mvtec_layout_references_come_from_train_good_and_are_not_published(
        tmp_path: Path) -> None:
    for rel in ("bottle/train/good/000.png", "bottle/train/good/001.png",
                "bottle/test/good/000.png", "bottle/test/crack/000.png",
                "grid/test/good/000.png", "grid/test/good/001.png", "grid/test/glue/000.png"):
        _png(tmp_path / rel)
    products = {p.name: p for p in discover(tmp_path, shots=1)}
    assert products["bottle"].references == [tmp_path / "bottle/train/good/000.png"]
    assert set(products["bottle"].frames) == {tmp_path / "bottle/test/good/000.png",
                                              tmp_path / "bottle/test/crack/000.png"}
    # no train/: the first test/good images are the references, excluded from the frames
    assert products["grid"].references == [tmp_path / "grid/test/good/000.png"]
    assert tmp_path / "grid/test/good/000.png" not in products["grid"].frames


def test_a_single_category_folder_and_a_plain_folder_work(tmp_path: Path) -> None:
    for rel in ("test/good/000.png", "test/good/001.png", "test/hole/000.png"):
        _png(tmp_path / "capsule" / rel)
    assert discover(tmp_path / "capsule", shots=1)[0].name == "capsule"
    for i in range(3):
        _png(tmp_path / "plain" / f"{i}.png")
    plain = discover(tmp_path / "plain", shots=2)[0]
    assert len(plain.references) == 2 and len(plain.frames) == 1


def test_synthetic_parts_have_references_and_both_kinds_of_frames(tmp_path: Path) -> None:
    product = synthetic_parts(tmp_path, shots=3, count=6)[0]
    assert len(product.references) == 3 and len(product.frames) == 6
    assert {p.parent.name for p in product.frames} == {"good", "defect"}


def test_synthetic_defect_frames_carry_the_kind_drawn(tmp_path: Path) -> None:
    from workers.demo.data import drawn_kind

    product = synthetic_parts(tmp_path, shots=2, count=8)[0]
    kinds = [drawn_kind(p) for p in product.frames]
    # every other frame has a defect: scratch and stain in turn
    assert kinds == [None, "scratch", None, "stain", None, "scratch", None, "stain"]
    assert drawn_kind(tmp_path / "good" / "001-scratch.png") is None  # only defect frames


def test_the_drawn_scratch_lies_on_the_washers_face_and_the_stain_lets_it_show(
        tmp_path: Path) -> None:  # fmt: skip
    """A line that opens into the bore reads as a cut, an opaque dark disc as a hole:
    the scratch stays between the bore and the rim, the stain is a blend."""
    from workers.demo.data import drawn_kind, load_rgb

    size = 256
    product = synthetic_parts(tmp_path, shots=2, count=16, size=size)[0]
    seen = set()
    for frame in product.frames:
        kind = drawn_kind(frame)
        img = load_rgb(frame).astype(int)
        if kind == "scratch":
            ys, xs = np.nonzero(img.max(axis=-1) < 45)  # the line; the conveyor is >= 60
            assert len(ys) > 40
            r = np.hypot(ys - size / 2, xs - size / 2)
            assert r.min() > size / 8 + 2 and r.max() < size * 3 / 8 - 2
        elif kind == "stain":
            rust = (img[..., 0] - img[..., 2] > 40)  # the washer is grey, the rust is not
            assert rust.sum() > 100
            # translucent: no pixel is the rust colour itself, the grey shows through
            assert img[rust][:, 2].min() > 50 + 20
        seen.add(kind)
    assert seen == {None, "scratch", "stain"}


def test_the_scorecard_counts_a_group_answer_led_by_the_drawn_kind_as_right() -> None:
    import uuid
    from types import SimpleNamespace

    from workers.demo.run import drawn_scorecard

    said = {"005-scratch": "a scratch or a cut", "007-stain": "a stain",
            "009-scratch": "a cut or a scratch",
            "011-stain": "unnamed: a discoloured spot, 14 px across, inside, towards the top",
            "013-scratch": "a scratch", "004": None}  # fmt: skip
    names, verdicts = {}, []
    for stem, text in said.items():
        fid = uuid.uuid4()
        folder = "good" if text is None else "defect"
        names[fid] = ("synthetic-part", Path(folder) / f"{stem}.png")
        regions = [] if text is None else [SimpleNamespace(description=text)]
        verdicts.append(SimpleNamespace(frame_id=fid, regions=regions))
    card = drawn_scorecard(verdicts, names)
    assert card == {"right": 3, "hedged": 1, "named": 4, "total": 5}
