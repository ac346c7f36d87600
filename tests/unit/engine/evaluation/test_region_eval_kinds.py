"""region_eval and train-describer on any MVTec-layout category: kinds from the defect
folders, kinds with too few images skipped and counted (never a crash in a fold without
training regions). Synthetic category, fake features and text: no encoder, no text model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.evaluation.region_eval import (
    evaluate_category,
    images_per_kind,
    keep_kinds,
    limit_per_kind,
)
from engine.training.describer_train import DescriberTrainConfig, RegionSet, train_describer
from tests.synthetic_category import FakeText, KindFeatures, make_category

pytestmark = pytest.mark.unit

CFG = DescriberTrainConfig(steps=20, batch_size=8)


def test_a_category_no_vocabulary_knows_is_evaluated_and_thin_kinds_are_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = evaluate_category(make_category(tmp_path), "kfold", CFG, KindFeatures(), FakeText(),
                            shots=0, iou=False, progress=False)  # fmt: skip
    assert out["images_per_kind"] == {"bent_lead": 4, "cut_lead": 3, "misplaced": 1}
    assert out["skipped_kinds"] == {"misplaced": 1}
    assert out["kinds"] == ["bent_lead", "cut_lead"]
    assert out["n_regions_tested"] == 7 and out["folds"] == 4
    assert 0.0 <= out["acc_after"] <= 100.0
    assert "skipped 1 kind(s) with fewer than 2 images" in capsys.readouterr().out


def test_one_or_two_images_per_kind_in_kfold_and_loio(tmp_path: Path) -> None:
    cat = make_category(tmp_path, {"bent_lead": 2, "cut_lead": 2, "damaged_case": 1,
                                   "misplaced": 2})  # fmt: skip
    for split in ("kfold", "loio", "half"):
        out = evaluate_category(cat, split, CFG, KindFeatures(), FakeText(), shots=0,
                                iou=False, progress=False)  # fmt: skip
        assert out["skipped_kinds"] == {"damaged_case": 1}
        assert out["n_regions_tested"] == (6 if split != "half" else 3)


def test_fewer_than_two_kinds_left_reports_instead_of_training(tmp_path: Path) -> None:
    cat = make_category(tmp_path, {"bent_lead": 3, "cut_lead": 1})
    out = evaluate_category(cat, "kfold", CFG, KindFeatures(), FakeText(), shots=0, iou=False,
                            progress=False)  # fmt: skip
    assert out["skipped_kinds"] == {"cut_lead": 1} and "acc_after" not in out


def test_the_learning_curve_trains_on_n_labelled_regions_per_kind(tmp_path: Path) -> None:
    out = evaluate_category(make_category(tmp_path), "kfold", CFG, KindFeatures(), FakeText(),
                            shots=0, iou=False, progress=False, labels_per_kind=(1, 2, 0),
                            repeats=2)  # fmt: skip
    curve = out["labels_per_kind"]
    assert list(curve) == ["1", "2", "all"]
    assert curve["1"]["n_train_regions_per_fold"] == 2  # one per kind, two kinds
    assert curve["2"]["n_train_regions_per_fold"] == 4
    # all: the other folds' images, 5.25 of 7 regions on average over 4 folds
    assert curve["all"]["n_train_regions_per_fold"] == pytest.approx(7 * 3 / 4)
    assert curve["1"]["draws"] == 2 and curve["all"]["draws"] == 1


def _set(labels: list[int], image_of: list[int]) -> RegionSet:
    n_img = max(image_of) + 1
    return RegionSet(["a", "b", "c"], [Path(f"{i}.png") for i in range(n_img)],
                     torch.arange(n_img, dtype=torch.float16)[:, None, None, None]
                     .expand(n_img, 2, 4, 4).clone(),
                     torch.tensor(image_of), torch.zeros(len(labels), 4, 4, dtype=torch.bool),
                     torch.tensor(labels))  # fmt: skip


def test_keep_kinds_renumbers_images_and_labels() -> None:
    data = _set([0, 2, 1, 2, 2], [0, 1, 2, 2, 3])
    assert images_per_kind(data) == {"a": 1, "b": 1, "c": 3}
    kept = keep_kinds(data, ["c", "b"])
    assert kept.kinds == ["c", "b"]
    assert kept.labels.tolist() == [0, 1, 0, 0]
    assert kept.image_of.tolist() == [0, 1, 1, 2]
    assert [p.name for p in kept.images] == ["1.png", "2.png", "3.png"]
    assert kept.features[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # their own features


def test_limit_per_kind_draws_at_most_n_of_each() -> None:
    data = _set([0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5])
    assert sorted(limit_per_kind(data, 2, seed=0).labels.tolist()) == [0, 0, 1, 2, 2]
    assert len(limit_per_kind(data, 0, seed=0).labels) == 6


def test_training_on_no_region_is_a_clear_error() -> None:
    from engine.defects.describer import RegionDescriber

    d = RegionDescriber(2, 12, torch.randn(3, 12), [0, 1, 2], joint_dim=8, hidden=16, grid=4)
    empty = _set([0], [0]).subset(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="no regions to train"):
        train_describer(d, empty, [0, 1, 2], CFG, progress=False)


def test_a_count_above_every_kind_s_is_the_all_run_and_not_trained_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import engine.evaluation.region_eval as region_eval

    calls: list[int] = []
    real = region_eval.train_describer

    def counting(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(region_eval, "train_describer", counting)
    out = evaluate_category(make_category(tmp_path), "kfold", CFG, KindFeatures(), FakeText(),
                            shots=0, iou=False, progress=False,
                            labels_per_kind=(10, 1, 0))  # fmt: skip
    assert len(calls) == 4 * 2  # per fold: n=1, and one run serving both 10 and all
    curve = out["labels_per_kind"]
    assert curve["10"]["acc_after"] == curve["all"]["acc_after"]
