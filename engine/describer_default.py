"""The default describer: names the generic defect kinds on any product, with no label
from that product.

Trained on (a) defects drawn on normal images of several products, whose kind is known
because engine.synthetic_defects drew them, and (b) the labelled ground-truth regions of
the shared data sets, their folder mapped to a generic kind by engine.defect_kinds.
It ships in engine/describers/default/ (describer.pt in float16, a few hundred KB);
rebuild it, seeded, with

    python -m engine.describer_default build --data /work/shared/data --unclear-below CUT

and measure it leave-one-source-out (no image, label or normal of the evaluated source in
training) with `python -m engine.describer_default evaluate --data ...`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.datasets import _images, load_rgb, split_category
from engine.defect_kinds import GENERIC_KINDS, generic_kind
from engine.describer import RegionDescriber, frame_patch_embeddings, pool_grid
from engine.describer_train import (
    DescriberTrainConfig,
    FeatureCache,
    RegionSet,
    _half_res,
    gt_regions,
    predict_kinds,
    similarities,
    train_describer,
)
from engine.synthetic import augment_normal
from engine.synthetic_defects import draw_defect

DEFAULT_DIR = Path(__file__).parent / "describers" / "default"
# sources of the shared data: a source is left out whole in the evaluation
SOURCES: dict[str, tuple[str, ...]] = {
    "magnetic_tile": ("magnetic-tile/magnetic_tile",),
    "transistor": ("mvtec-more/transistor",),
    "leather": ("mvtec-more/leather",),
    "mvtec-sample": ("mvtec-sample/bottle", "mvtec-sample/capsule", "mvtec-sample/grid"),
}
# its own features (not the product model's, which may change): a full encoder pass on
# the frames that have regions
BACKBONE, STAGES = "efficientnet-lite0", (2, 4)
SYNTH_VERSION = 1  # bump when engine.synthetic_defects draws differently (cache key)
# the default describer is small enough to ship in the package
HIDDEN, JOINT = 128, 128


@dataclass
class Corpus:
    """Regions with the source each comes from and whether it was drawn."""

    regions: RegionSet
    source: torch.Tensor  # [M] long, index into the source names
    drawn: torch.Tensor  # [M] bool

    def subset(self, rows: np.ndarray) -> Corpus:
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return Corpus(self.regions.subset(rows), self.source[idx], self.drawn[idx])


def _region_set(images: list[Path], feats: list[torch.Tensor], image_of: list[int],
                masks: list[torch.Tensor], labels: list[int]) -> RegionSet:  # fmt: skip
    return RegionSet(list(GENERIC_KINDS), images, torch.stack(feats), torch.tensor(image_of),
                     torch.stack(masks), torch.tensor(labels))  # fmt: skip


def real_regions(category: Path, cache: FeatureCache, min_area: int = 4) -> RegionSet | None:
    """Ground-truth regions of a category's defect images, labelled with generic kinds."""
    images, feats, image_of, masks, labels = [], [], [], [], []
    for s in split_category(category, 0).evaluated:
        kind = generic_kind(category.name, s.kind) if s.label == 1 else None
        if kind is None or s.mask_path is None:
            continue
        regions = gt_regions(s, cache.size, min_area)
        if not regions:
            continue
        images.append(s.path)
        feats.append(cache.get(s.path))
        for m in regions:
            image_of.append(len(images) - 1)
            masks.append(_half_res(m))
            labels.append(GENERIC_KINDS.index(kind))
    return _region_set(images, feats, image_of, masks, labels) if masks else None


def normal_images(category: Path) -> list[Path]:
    return _images(category / "train" / "good") or _images(category / "test" / "good")


def drawn_regions(category: Path, cache: FeatureCache, count: int, seed: int,
                  cache_dir: Path | None = None, progress: bool = True) -> RegionSet:  # fmt: skip
    """`count` defects drawn on the category's normal images, the kinds in turn."""
    key = None
    if cache_dir is not None:
        name = f"drawn-v{SYNTH_VERSION}-{category.parent.name}-{category.name}-{count}-{seed}"
        key = cache_dir / f"{name}-{cache.size}-{cache.grid}.pt"
        if key.is_file():
            return RegionSet(**torch.load(key, weights_only=False))
    normals = normal_images(category)
    if not normals:
        raise ValueError(f"{category}: no normal images to draw on")
    # one seed per category: adding a category does not change the others' drawings
    rng = np.random.default_rng([seed, sum(map(ord, f"{category.parent.name}/{category.name}"))])
    originals = [load_rgb(p, cache.size) for p in normals]
    images, feats, masks, labels = [], [], [], []
    for i in tqdm(range(count), desc=f"drawing {category.name}", disable=not progress,
                  leave=False):  # fmt: skip
        kind = GENERIC_KINDS[i % len(GENERIC_KINDS)]
        j = int(rng.integers(len(originals)))
        base = np.ascontiguousarray(augment_normal(originals[j], rng))
        donors = [originals[int(rng.integers(len(originals)))]]
        img, mask = draw_defect(base, kind, rng, donors)
        if mask.sum() < 4:
            continue
        frame = torch.from_numpy(img[None])
        feat = frame_patch_embeddings(cache.encoder, cache.preprocess, frame, cache.pool)
        images.append(normals[j])
        feats.append(pool_grid(feat, cache.grid)[0].half())
        masks.append(_half_res(mask.astype(bool)))
        labels.append(GENERIC_KINDS.index(kind))
    out = _region_set(images, feats, list(range(len(images))), masks, labels)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out.__dict__, key)
    return out


def build_corpus(data: Path, cache: FeatureCache, drawn_per_category: int, seed: int,
                 cache_dir: Path | None, progress: bool = True) -> Corpus:  # fmt: skip
    """Every source's real regions and drawn regions, in one set."""
    parts: list[tuple[RegionSet, int, bool]] = []
    for s, (_name, cats) in enumerate(SOURCES.items()):
        for rel in cats:
            cat = data / rel
            if not cat.is_dir():
                continue
            real = real_regions(cat, cache)
            if real is not None:
                parts.append((real, s, False))
            if normal_images(cat):
                parts.append((drawn_regions(cat, cache, drawn_per_category, seed, cache_dir,
                                            progress), s, True))  # fmt: skip
    if not parts:
        raise FileNotFoundError(f"none of the data sets {sorted(SOURCES)} under {data}")
    images, feats, image_of, masks, labels, source, drawn = [], [], [], [], [], [], []
    offset = 0
    for rs, s, is_drawn in parts:
        images += rs.images
        feats.append(rs.features)
        image_of.append(rs.image_of + offset)
        masks.append(rs.masks)
        labels.append(rs.labels)
        source.append(torch.full((len(rs.labels),), s))
        drawn.append(torch.full((len(rs.labels),), is_drawn))
        offset += len(rs.images)
    regions = RegionSet(list(GENERIC_KINDS), images, torch.cat(feats), torch.cat(image_of),
                        torch.cat(masks), torch.cat(labels))  # fmt: skip
    return Corpus(regions, torch.cat(source), torch.cat(drawn))


def new_default_describer(vocab_text: torch.Tensor, owner: list[int], in_channels: int,
                          seed: int) -> RegionDescriber:  # fmt: skip
    torch.manual_seed(seed)
    return RegionDescriber(in_channels, int(vocab_text.shape[1]), vocab_text, owner,
                           joint_dim=JOINT, hidden=HIDDEN, relative=True)  # fmt: skip


def train_config(steps: int, seed: int) -> DescriberTrainConfig:
    # no CLAD text branch to start from: the projections learn at the adapter's rate
    return DescriberTrainConfig(steps=steps, lr_pretrained=1e-3, seed=seed)


def softmax(sims: np.ndarray, tau: float) -> np.ndarray:
    z = sims / tau
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrated_tau(sims: np.ndarray, truth: np.ndarray) -> float:
    """The softmax temperature that makes held-out confidences honest (least negative
    log-likelihood on a grid): training's 0.07 makes every answer look near-certain."""
    grid = np.geomspace(0.02, 2.0, 60)
    nll = [-np.log(softmax(sims, t)[np.arange(len(truth)), truth] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def unclear_cut(conf: np.ndarray, correct: np.ndarray, precision: float = 0.5) -> float:
    """The lowest confidence above which held-out descriptions are right at least
    `precision` of the time: below it a region reads "unclear defect"."""
    order = np.argsort(-conf)
    hits = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(hits >= precision)
    if not len(ok):
        return float(conf.max()) + 1e-6  # never right enough: everything is unclear
    return float(conf[order][ok[-1]])


def leave_one_source_out(corpus: Corpus, vocab_text: torch.Tensor, owner: list[int],
                         steps: int, seed: int, progress: bool = True) -> dict:  # fmt: skip
    """Per source: accuracy on its REAL regions of a describer trained on the other
    sources only (their real and drawn regions), and of the untuned describer."""
    names = list(SOURCES)
    c = int(corpus.regions.features.shape[1])
    results: dict = {"sources": {}}
    all_sims, all_truth = [], []
    for s, name in enumerate(names):
        test_rows = np.flatnonzero((corpus.source == s).numpy() & ~corpus.drawn.numpy())
        if not len(test_rows):
            continue
        train_rows = np.flatnonzero((corpus.source != s).numpy())
        test = corpus.subset(test_rows).regions
        truth = test.labels.numpy()
        desc = new_default_describer(vocab_text, owner, c, seed)
        untuned = predict_kinds(desc, test) == truth
        train_describer(desc, corpus.subset(train_rows).regions, owner,
                        train_config(steps, seed), progress=progress)  # fmt: skip
        pred = predict_kinds(desc, test)
        all_sims.append(similarities(desc, test))
        all_truth.append(truth)
        present = sorted(set(truth.tolist()))
        majority = max(float(np.mean(truth == k)) for k in present)
        per_kind = {GENERIC_KINDS[k]: {"n": int((truth == k).sum()),
                                       "acc": 100 * float((pred[truth == k] == k).mean()),
                                       "said": _counts(pred[truth == k])}
                    for k in present}  # fmt: skip
        folder = _folders(test)
        per_folder = {f: {"n": int(np.sum(folder == f)),
                          "acc": 100 * float(np.mean(pred[folder == f] == truth[folder == f]))}
                      for f in sorted(set(folder))}  # fmt: skip
        results["sources"][name] = {
            "n_regions": int(len(truth)), "n_train_regions": int(len(train_rows)),
            "chance": 100 / len(GENERIC_KINDS), "majority_kind": 100 * majority,
            "untuned": 100 * float(untuned.mean()), "default": 100 * float((pred == truth).mean()),
            "per_kind": per_kind, "per_folder": per_folder}  # fmt: skip
    sims, truth = np.concatenate(all_sims), np.concatenate(all_truth)
    tau = calibrated_tau(sims, truth)
    probs = softmax(sims, tau)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == truth
    cut = unclear_cut(conf, correct)
    kept = conf >= cut
    results["tau"] = tau
    results["unclear_below"] = cut
    results["kept_share"] = 100 * float(kept.mean())
    results["kept_accuracy"] = 100 * float(correct[kept].mean()) if kept.any() else None
    return results


def _counts(pred: np.ndarray) -> dict[str, int]:
    return {GENERIC_KINDS[k]: int(n) for k, n in zip(*np.unique(pred, return_counts=True),
                                                     strict=True)}  # fmt: skip


def _folders(data: RegionSet) -> np.ndarray:
    return np.array([data.images[int(i)].parent.name for i in data.image_of])


def main(argv: list[str] | None = None) -> None:
    from engine.describer_artifacts import GENERIC, save_describer
    from engine.describer_train import feature_settings, make_feature_cache
    from engine.text_encoder import load_text_encoder
    from engine.vocabulary import load_vocabulary

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["build", "evaluate"])
    ap.add_argument("--data", type=Path, required=True, help="Folder holding the data sets.")
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--drawn", type=int, default=220, help="Drawn defects per category.")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared box).")
    ap.add_argument("--result", type=Path, default=None, help="evaluate: JSON written here.")
    ap.add_argument("--exclude", action="append", default=[], choices=list(SOURCES),
                    help="build: leave a source out (to check it on unseen images).")
    ap.add_argument("--unclear-below", type=float, default=None,
                    help="build: the confidence cut (from `evaluate`).")
    ap.add_argument("--tau", type=float, default=None,
                    help="build: the calibrated softmax temperature (from `evaluate`).")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = make_feature_cache(cache_dir=args.cache_dir, backbone=BACKBONE, stages=STAGES)
    corpus = build_corpus(args.data, cache, args.drawn, args.seed, args.cache_dir)
    # object-free phrasings (vocab/generic.json: "a crack"), so any product uses the
    # stored phrase embeddings and no text encoder is needed at run time
    vocab = load_vocabulary(GENERIC)
    phrases, owner = vocab.phrases()
    text = load_text_encoder().encode(phrases)
    if args.action == "evaluate":
        res = leave_one_source_out(corpus, text, owner, args.steps, args.seed)
        res["command"] = {k: str(v) for k, v in vars(args).items()}
        body = json.dumps(res, indent=2)
        if args.result is not None:
            args.result.parent.mkdir(parents=True, exist_ok=True)
            args.result.write_text(body + "\n")
        print(body)
        return
    if args.exclude:
        left_out = [list(SOURCES).index(x) for x in args.exclude]
        corpus = corpus.subset(np.flatnonzero(~np.isin(corpus.source.numpy(), left_out)))
    desc = new_default_describer(text, owner, int(corpus.regions.features.shape[1]), args.seed)
    metrics = train_describer(desc, corpus.regions, owner, train_config(args.steps, args.seed))
    if args.tau is not None:
        desc.tau = args.tau  # confidences as calibrated held out; the ranking is unchanged
    metrics["unclear_below"] = args.unclear_below
    metrics["calibrated_tau"] = args.tau
    metrics["n_drawn"] = int(corpus.drawn.sum())
    metrics["n_real"] = int((~corpus.drawn).sum())
    metrics["sources_left_out"] = args.exclude
    features = {**feature_settings(cache), "backbone": BACKBONE, "stages": list(STAGES)}
    save_describer(args.out, desc, vocab, features, metrics, half=True)
    print(f"default describer: {metrics['n_real']} real + {metrics['n_drawn']} drawn regions, "
          f"loss {metrics['final_loss']:.3f}, saved in {args.out}")


if __name__ == "__main__":
    main()
