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
import time
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
    dataset_vocabulary,
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


MIN_IMAGES_PER_KIND = 2  # held out, a kind needs an image to train on and one to test


def images_per_kind(data: RegionSet) -> dict[str, int]:
    """How many images hold regions of each kind."""
    pairs = set(zip(data.image_of.tolist(), data.labels.tolist(), strict=True))
    return {k: sum(1 for _, label in pairs if label == i) for i, k in enumerate(data.kinds)}


def keep_kinds(data: RegionSet, keep: list[str]) -> RegionSet:
    """The regions of the `keep` kinds only, their images renumbered (an image with no
    region left is dropped, so every image row has a kind)."""
    old = [data.kinds.index(k) for k in keep]
    regions = np.flatnonzero(np.isin(data.labels.numpy(), old))
    image_of = data.image_of.numpy()[regions]
    images = sorted(set(image_of.tolist()))
    new_image = {r: i for i, r in enumerate(images)}
    new_label = {o: i for i, o in enumerate(old)}
    idx = torch.as_tensor(regions)
    return RegionSet(list(keep), [data.images[r] for r in images],
                     data.features[torch.as_tensor(images)],
                     torch.tensor([new_image[int(r)] for r in image_of], dtype=torch.long),
                     data.masks[idx],
                     torch.tensor([new_label[int(v)] for v in data.labels[idx]],
                                  dtype=torch.long))  # fmt: skip


def labelled_rows(labels: np.ndarray, n_kinds: int, n: int, seed: int) -> np.ndarray:
    """Rows of at most `n` regions of each kind, drawn at random (seeded): an operator who
    has labelled n regions per kind. n <= 0: all."""
    if n <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(labels == k))[:n] for k in range(n_kinds)]
    return np.sort(np.concatenate(rows))


def limit_per_kind(data: RegionSet, n: int, seed: int) -> RegionSet:
    """`data` with at most `n` regions of each kind (labelled_rows)."""
    return data.subset(labelled_rows(data.labels.numpy(), len(data.kinds), n, seed))


def description_accuracy(
    data: RegionSet, vocab_text: torch.Tensor, owner: list[int], split: str,
    cfg: DescriberTrainConfig, progress: bool = True, labels_per_kind: tuple[int, ...] = (0,),
    repeats: int = 1,
) -> dict[str, object]:  # fmt: skip
    """Held-out accuracy of the untuned describer and of the fine-tuned one, for each number
    of labelled training regions per kind (0: all; `repeats` draws of the labelled regions
    below all)."""
    c = int(data.features.shape[1])
    before: list[np.ndarray] = []
    after: dict[int, list[np.ndarray]] = {n: [] for n in labels_per_kind}
    n_train: dict[int, list[int]] = {n: [] for n in labels_per_kind}
    folds = image_folds(data, split, cfg.seed)
    for f, (train_rows, test_rows) in enumerate(folds):
        test_set = data.subset(regions_of(data, test_rows))
        truth = test_set.labels.numpy()
        before.append(predict_kinds(new_describer(vocab_text, owner, c, cfg.seed), test_set)
                      == truth)  # fmt: skip
        train_all = data.subset(regions_of(data, train_rows))
        trained: dict[bytes, np.ndarray] = {}  # one training per distinct training set
        for n in labels_per_kind:
            for r in range(repeats if n > 0 else 1):
                rows = labelled_rows(train_all.labels.numpy(), len(data.kinds), n,
                                     cfg.seed + 1000 * r + f)  # fmt: skip
                n_train[n].append(len(rows))
                key = rows.tobytes()
                if key not in trained:  # n at least every kind's count: the same set as all
                    train_set = train_all.subset(rows)
                    desc = new_describer(vocab_text, owner, c, cfg.seed)
                    train_describer(desc, train_set, owner, cfg, progress=progress)
                    trained[key] = predict_kinds(desc, test_set) == truth
                after[n].append(trained[key])
    b = np.concatenate(before)
    out: dict[str, object] = {
        "n_images": len(data.images), "n_regions": len(data.labels), "kinds": data.kinds,
        "n_regions_tested": int(b.size), "folds": len(folds),
        "acc_before": 100 * float(b.mean())}  # fmt: skip
    curve = {}
    for n in labels_per_kind:
        a = np.concatenate(after[n])
        curve["all" if n <= 0 else str(n)] = {
            "acc_after": 100 * float(a.mean()),
            "n_train_regions_per_fold": float(np.mean(n_train[n])),
            "draws": repeats if n > 0 else 1}  # fmt: skip
    last = curve["all" if labels_per_kind[-1] <= 0 else str(labels_per_kind[-1])]
    out["n_train_regions_per_fold"] = last["n_train_regions_per_fold"]
    out["acc_after"] = last["acc_after"]  # the last point (all, by default)
    if len(labels_per_kind) > 1 or labels_per_kind[0] > 0:
        out["labels_per_kind"] = curve
    return out


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
    samples = split_category(cat, 0).evaluated
    vocab = dataset_vocabulary(cat.name, samples, seed=load_vocabulary(cat.name))
    data = build_region_set(samples, vocab.keys, _NoFeatures(size),
                            progress=False)  # type: ignore[arg-type]
    rows = image_folds(data, "half", seed)[0][1]
    return {"category": cat.name,
            "iou": region_iou(cat, data, rows, shots, size, min_area=16, fixed=fixed)}


def evaluate_category(cat: Path, split: str, cfg: DescriberTrainConfig, cache: FeatureCache,
                      text_encoder: object, shots: int, iou: bool, progress: bool = True,
                      labels_per_kind: tuple[int, ...] = (0,),
                      repeats: int = 1) -> dict[str, object]:  # fmt: skip
    """Kinds from the category's defect folders (its vocabulary file, if any, lends
    phrasings); kinds with too few images to hold one out are skipped and counted."""
    samples = split_category(cat, 0).evaluated
    vocab = dataset_vocabulary(cat.name, samples, seed=load_vocabulary(cat.name))
    data = build_region_set(samples, vocab.keys, cache, progress=progress)
    counts = images_per_kind(data)
    keep = [k for k in data.kinds if counts[k] >= MIN_IMAGES_PER_KIND]
    skipped = {k: n for k, n in counts.items() if n < MIN_IMAGES_PER_KIND}
    out: dict[str, object] = {"category": cat.name, "split": split,
                              "images_per_kind": counts, "skipped_kinds": skipped}
    if skipped:
        print(f"{cat.name}: skipped {len(skipped)} kind(s) with fewer than "
              f"{MIN_IMAGES_PER_KIND} images (one trains, one is held out): "
              + ", ".join(f"{k} ({n} image{'s' * (n != 1)})" for k, n in skipped.items()),
              flush=True)  # fmt: skip
    if len(keep) < 2:
        print(f"{cat.name}: fewer than 2 kinds with {MIN_IMAGES_PER_KIND}+ images: "
              f"no description accuracy", flush=True)  # fmt: skip
        return out
    data = keep_kinds(data, keep)
    vocab = Vocabulary(vocab.category, vocab.object_name, {k: vocab.kinds[k] for k in keep})
    phrases, owner = vocab.phrases()
    vocab_text = text_encoder.encode(phrases)  # type: ignore[attr-defined]
    out.update(description_accuracy(data, vocab_text, owner, split, cfg, progress,
                                    labels_per_kind, repeats))  # fmt: skip
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
    ap.add_argument("--labels-per-kind", type=int, nargs="*", default=[0],
                    help="learning curve: train on at most N labelled regions per kind "
                         "(0: all), e.g. 1 3 5 10 0")
    ap.add_argument("--repeats", type=int, default=1,
                    help="draws of the labelled regions for each N below all")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    from engine.scoring.text_encoder import load_text_encoder
    from engine.training.datasets import find_categories
    from engine.training.describer_train import make_feature_cache

    torch.set_num_threads(min(2, torch.get_num_threads()))  # OMP_NUM_THREADS=1 holds
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
    start = time.monotonic()
    for cat in find_categories(args.data):
        print(f"category {cat.name} ({time.monotonic() - start:.0f} s)", flush=True)
        r = evaluate_category(cat, args.split, cfg, cache, text_encoder, args.shots,
                              not args.no_iou, labels_per_kind=tuple(args.labels_per_kind),
                              repeats=args.repeats)  # fmt: skip
        print(json.dumps(r), flush=True)
        print(f"{cat.name} done ({time.monotonic() - start:.0f} s)", flush=True)
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
