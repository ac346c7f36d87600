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
