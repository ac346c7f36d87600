"""Description accuracy (before vs after fine-tuning) and region IoU per category.

Accuracy: every ground-truth region (GT masks split as in the paper) of a held-out
image is described; correct when the predicted kind is the image's defect folder.
Splits are by IMAGE, so no region of a test image is ever trained on:
  - "half": per defect kind, a seeded half of the images trains, the rest tests;
  - "kfold": 4 folds by image (each kind spread over the folds), every image
    tested once by a describer trained on the other three folds;
  - "loio": leave-one-image-out (every image tested by a describer trained on
    all the others) for categories with a handful of images.
Region IoU: anomaly maps of a k-shot runtime, thresholded at a pixel threshold
calibrated on normal images that are not references, split into regions, each
GT region matched to its best predicted region. Two thresholds side by side:
  - "quantile": the 99.9% quantile of all normal pixels (the first measurement);
  - "calibrated": engine.scoring.calibration's region threshold (false-alarm rule on the
    normal maps' peaks, what a saved model carries), also with the verdict rule
    (engine.defects.regions.verdict_regions: anomalous by the image threshold -> at least
    one region, the hottest area when the cut finds none);
  - "image_threshold_cut": the image threshold used as the cut, as the worker did
    before the region threshold existed.
`--iou-only` skips the describer (no feature cache, no training).

Run: python -m engine.evaluation.region_eval --data DIR [--split half|kfold|loio]
(engine/defects/NOTES.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from engine.defects.describer import RegionDescriber
from engine.defects.regions import extract_regions, mask_iou, verdict_regions
from engine.defects.vocabulary import Vocabulary, load_vocabulary
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import calibrate
from engine.training.datasets import load_rgb, split_category
from engine.training.describer_train import (
    DescriberTrainConfig,
    FeatureCache,
    RegionSet,
    build_region_set,
    gt_regions,
    predict_kinds,
    train_describer,
)


def new_describer(vocab_text: torch.Tensor, owner: list[int], in_channels: int,
                  seed: int) -> RegionDescriber:  # fmt: skip
    torch.manual_seed(seed)
    return RegionDescriber(in_channels, int(vocab_text.shape[1]), vocab_text, owner)


def image_folds(data: RegionSet, split: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train image rows, test image rows) per fold."""
    n = len(data.images)
    if split == "loio":
        return [(np.setdiff1d(np.arange(n), [i]), np.array([i])) for i in range(n)]
    first_label = {int(data.image_of[j]): int(data.labels[j]) for j in range(len(data.labels))}
    rng = np.random.default_rng(seed)
    if split == "kfold":  # 4 folds, each kind's images dealt round-robin after a shuffle
        fold_of = {}
        for k in sorted(set(first_label.values())):
            rows = rng.permutation([i for i in range(n) if first_label[i] == k])
            fold_of.update({int(r): j % 4 for j, r in enumerate(rows)})
        tests = [np.array([i for i in range(n) if fold_of[i] == f]) for f in range(4)]
        return [(np.setdiff1d(np.arange(n), t), t) for t in tests if len(t)]
    train, test = [], []
    for k in sorted(set(first_label.values())):
        rows = rng.permutation([i for i in range(n) if first_label[i] == k])
        cut = (len(rows) + 1) // 2
        train += rows[:cut].tolist()
        test += rows[cut:].tolist()
    return [(np.array(sorted(train)), np.array(sorted(test)))]


def regions_of(data: RegionSet, image_rows: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(data.image_of.numpy(), image_rows))


def description_accuracy(
    data: RegionSet, vocab_text: torch.Tensor, owner: list[int], split: str,
    cfg: DescriberTrainConfig, progress: bool = True,
) -> dict[str, float | int]:  # fmt: skip
    """Held-out accuracy of the untuned describer and of the fine-tuned one."""
    c = int(data.features.shape[1])
    before, after, n_train = [], [], []
    for train_rows, test_rows in image_folds(data, split, cfg.seed):
        test_set = data.subset(regions_of(data, test_rows))
        truth = test_set.labels.numpy()
        desc = new_describer(vocab_text, owner, c, cfg.seed)
        before.append(predict_kinds(desc, test_set) == truth)
        train_set = data.subset(regions_of(data, train_rows))
        n_train.append(len(train_set.labels))
        train_describer(desc, train_set, owner, cfg, progress=progress)
        after.append(predict_kinds(desc, test_set) == truth)
    b, a = np.concatenate(before), np.concatenate(after)
    return {"n_images": len(data.images), "n_regions_tested": int(b.size),
            "n_train_regions_per_fold": int(np.mean(n_train)), "folds": len(n_train),
            "acc_before": 100 * float(b.mean()), "acc_after": 100 * float(a.mean())}  # fmt: skip


def _match(preds: list[np.ndarray], gts: list[np.ndarray], size: int,
           acc: dict[str, list[float]]) -> None:
    for g in gts:
        iou = max((mask_iou(g, p) for p in preds), default=0.0)
        acc["best"].append(iou)
    for p in preds:
        acc["pred_ok"].append(max((mask_iou(g, p) for g in gts), default=0.0) >= 0.5)
    union_p = np.any(preds, axis=0) if preds else np.zeros((size, size), bool)
    acc["image_iou"].append(mask_iou(np.any(gts, axis=0), union_p))


def _summary(acc: dict[str, list[float]], threshold: float) -> dict[str, float]:
    best = np.array(acc["best"])
    return {"threshold": threshold, "gt_regions": int(best.size),
            "region_iou": float(best.mean()), "recall_at_0.5": float((best >= 0.5).mean()),
            "pred_regions": len(acc["pred_ok"]),
            "precision_at_0.5": float(np.mean(acc["pred_ok"])) if acc["pred_ok"] else 0.0,
            "image_iou": float(np.mean(acc["image_iou"]))}  # fmt: skip


@torch.no_grad()
def region_iou(cat: Path, data: RegionSet, image_rows: np.ndarray, shots: int,
               size: int, min_area: int, quantile: float = 0.999,
               fixed: tuple[float, ...] = ()) -> dict[str, object]:  # fmt: skip
    """GT regions vs regions of the k-shot runtime's maps, at both thresholds; `fixed`:
    extra thresholds for context (chosen by hand, never a calibration)."""
    split = split_category(cat, shots)
    pool = sorted({s.path for s in split.evaluated if s.label == 0} - set(data.images))
    train_good = sorted((cat / "train" / "good").glob("*.png"))[shots : shots + 10]
    calib = train_good or pool[:10]  # normal, never a reference
    refs = [load_rgb(p, size) for p in split.references]
    rt = build_runtime(refs, ScoringConfig(input_size=size))
    normal = [rt(torch.from_numpy(load_rgb(p, size)[None])) for p in calib]
    normal_maps = np.stack([o.maps[0].numpy() for o in normal])
    thr = float(np.quantile(normal_maps, quantile))
    calibrated = calibrate(np.array([float(o.scores[0]) for o in normal]),
                           normal_maps=normal_maps)  # fmt: skip
    pixel = float(calibrated.pixel)  # type: ignore[arg-type]
    by_path = {s.path: s for s in split.evaluated}
    rules = ("quantile", "calibrated", "calibrated_verdict", "image_threshold_cut")
    acc = {r: {"best": [], "pred_ok": [], "image_iou": []} for r in (*rules, *fixed)}
    flagged = fallbacks = 0
    for row in image_rows:
        path = data.images[int(row)]
        out = rt(torch.from_numpy(load_rgb(path, size)[None]))
        amap = out.maps[0].numpy()
        gts = gt_regions(by_path[path], size, 4)
        anomalous = float(out.scores[0]) > calibrated.value
        verdict = verdict_regions(amap, anomalous=anomalous, threshold=pixel,
                                  min_area=min_area)  # fmt: skip
        flagged += anomalous
        fallbacks += any(r.fallback for r in verdict)
        _match([r.mask for r in extract_regions(amap, thr, min_area)], gts, size, acc["quantile"])
        _match([r.mask for r in extract_regions(amap, pixel, min_area)], gts, size,
               acc["calibrated"])  # fmt: skip
        _match([r.mask for r in verdict], gts, size, acc["calibrated_verdict"])
        _match([r.mask for r in extract_regions(amap, calibrated.value, min_area)], gts, size,
               acc["image_threshold_cut"])  # fmt: skip
        for t in fixed:
            _match([r.mask for r in extract_regions(amap, t, min_area)], gts, size, acc[t])
    res: dict[str, object] = {"calib_images": len(calib), "image_threshold": calibrated.value,
                              "images": len(image_rows), "flagged_anomalous": flagged,
                              "fallback_regions": fallbacks}  # fmt: skip
    used = {"quantile": thr, "image_threshold_cut": calibrated.value}
    res.update({r: _summary(acc[r], used.get(r, pixel)) for r in rules})
    res.update({f"fixed_{t:g}": _summary(acc[t], t) for t in fixed})
    return res


class _NoFeatures:
    """Stands in for the feature cache when only region IoU is measured."""

    def __init__(self, size: int) -> None:
        self.size = size

    def get(self, path: Path) -> torch.Tensor:
        return torch.zeros(1, 1, 1)


def iou_only(cat: Path, shots: int, size: int, seed: int,
             fixed: tuple[float, ...] = ()) -> dict[str, object]:  # fmt: skip
    """Region IoU on the same test half as the full run, without the describer."""
    vocab: Vocabulary = load_vocabulary(cat.name)
    data = build_region_set(split_category(cat, 0).evaluated, vocab.keys,
                            _NoFeatures(size), progress=False)  # type: ignore[arg-type]
    rows = image_folds(data, "half", seed)[0][1]
    return {"category": cat.name,
            "iou": region_iou(cat, data, rows, shots, size, min_area=16, fixed=fixed)}


def evaluate_category(cat: Path, split: str, cfg: DescriberTrainConfig, cache: FeatureCache,
                      text_encoder: object, shots: int, iou: bool,
                      progress: bool = True) -> dict[str, object]:  # fmt: skip
    vocab: Vocabulary = load_vocabulary(cat.name)
    phrases, owner = vocab.phrases()
    vocab_text = text_encoder.encode(phrases)  # type: ignore[attr-defined]
    samples = split_category(cat, 0).evaluated
    data = build_region_set(samples, vocab.keys, cache, progress=progress)
    out: dict[str, object] = {"category": cat.name, "split": split}
    out.update(description_accuracy(data, vocab_text, owner, split, cfg, progress))
    if iou:
        rows = image_folds(data, "half", cfg.seed)[0][1] if split == "half" else \
            np.arange(len(data.images))  # fmt: skip
        out["iou"] = region_iou(cat, data, rows, shots, cache.size, min_area=16)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a category or a folder of them")
    ap.add_argument("--split", choices=("half", "kfold", "loio"), default="half")
    ap.add_argument("--batch-size", type=int, default=DescriberTrainConfig.batch_size)
    ap.add_argument("--steps", type=int, default=DescriberTrainConfig.steps)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--no-iou", action="store_true")
    ap.add_argument("--iou-only", action="store_true",
                    help="region IoU only (test half), no describer: no feature cache")
    ap.add_argument("--fixed-thresholds", type=float, nargs="*", default=[],
                    help="with --iou-only: also these pixel thresholds, for context")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    from engine.scoring.text_encoder import load_text_encoder
    from engine.training.datasets import find_categories
    from engine.training.describer_train import make_feature_cache

    torch.set_num_threads(2)
    cfg = DescriberTrainConfig(steps=args.steps, batch_size=args.batch_size)
    if args.iou_only:
        results = []
        for cat in find_categories(args.data):
            results.append(iou_only(cat, args.shots, ScoringConfig().input_size, cfg.seed,
                                    tuple(args.fixed_thresholds)))
            print(json.dumps(results[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    cache = make_feature_cache(cache_dir=args.cache_dir)
    text_encoder = load_text_encoder()
    results = []
    for cat in find_categories(args.data):
        print(f"category {cat.name}", flush=True)
        r = evaluate_category(cat, args.split, cfg, cache, text_encoder, args.shots,
                              not args.no_iou)  # fmt: skip
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
