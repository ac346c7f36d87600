"""The default describer: names the generic defect kinds on any product, with no label
from that product.

A random forest over product-agnostic region features (engine.defects.region_features: the
region's shape, and its brightness, colour and texture against a ring around it),
trained on (a) defects drawn on normal images of several products and of plain parts made
from scratch (engine.training.plain_parts), whose kind is known because
engine.training.synthetic_defects drew them, and (b) the labelled ground-truth regions
of the shared data sets, their folder mapped to a generic kind by engine.defects.defect_kinds.
Every region is seen three times in training: with its exact mask and as the blob an
anomaly map draws around it at run time (`map_blob`: blurred and cut, as a patch-level
map is), once as a weak defect's and once as a strong one's (wider: `wide_blob`).
It ships in engine/defects/describers/default/ (forest.npz);
rebuild it, seeded, with

    python -m engine.training.describer_default build --data /work/shared/data

which first measures it leave-one-source-out (no image, label or normal of the
evaluated source in training; `evaluate` prints only that), calibrates on those held-out
answers the cut below which a kind is not named and the one below which its group of
kinds is not named either ("unclear defect"), then fits on everything.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engine.defects.defect_kinds import GENERIC_KINDS, KIND_GROUPS, generic_kind, kind_group
from engine.defects.refine import refine_region
from engine.defects.region_features import (
    ENCLOSED_SHARE,
    FEATURE_NAMES,
    WORK,
    features_of,
    frame_planes,
)
from engine.defects.regions import split_mask
from engine.training.datasets import _images, load_mask, load_rgb, split_category
from engine.training.plain_parts import CLEAN_SHARE, plain_part
from engine.training.synthetic import augment_normal
from engine.training.synthetic_defects import DARK_TINT, FADED, draw_defect

DEFAULT_DIR = Path(__file__).parents[1] / "defects" / "describers" / "default"
# sources of the shared data: a source is left out whole in the evaluation
SOURCES: dict[str, tuple[str, ...]] = {
    "magnetic_tile": ("magnetic-tile/magnetic_tile",),
    "transistor": ("mvtec-more/transistor",),
    "leather": ("mvtec-more/leather",),
    "mvtec-sample": ("mvtec-sample/bottle", "mvtec-sample/capsule", "mvtec-sample/grid"),
}
# a drawn defect whose pixels changed less than this (mean over its mask, grey levels) is
# dropped: a shifted copy of a plain surface or a warp of a flat one looks like nothing,
# and such rows taught the forest to call any faint map blob a misplaced part or a dent
MIN_CHANGE = 10.0
# drawn-only source, index len(SOURCES): plain parts made by engine.training.plain_parts
PLAIN, PLAIN_PARTS = "plain-parts", 48
ROWS_VERSION = 5  # bump when the drawings, the features or the views change (cache key)
# an anomaly map's region is the defect grown by about one patch cell: 8 px at WORK
BLOB_RADIUS = 8
# map_blob: blur (px at WORK) and the cut's level (share of the blurred peak)
MAP_SIGMA, MAP_LEVEL = (3.0, 8.0), (0.15, 0.45)
# wide_blob: the blur of a strong defect's map region, which outgrows map_blob's (the
# demo's runtime regions around a 5-px line are 38-44 px thick, map_blob's 13-20 px)
WIDE_SIGMA = (8.0, 14.0)
TREES, MIN_LEAF = 60, 8  # forest.npz stays a few hundred KB (150 trees, leaf 4: 1.4 MB)


@dataclass(frozen=True)
class RowOptions:
    """What the rows are made with beyond v3's (all off: the v3 rows, bit for bit): small
    enclosed off-foreground spots read as on the part (region_features.ENCLOSED_SHARE,
    saved with the describer, which then computes its features so), clean plain parts
    (plain_parts.CLEAN_SHARE), dark tinted stains (synthetic_defects.DARK_TINT) and faded
    ones (synthetic_defects.FADED)."""

    enclosed_share: float = 0.0
    clean_share: float = 0.0
    dark_tint: float = 0.0
    faded: float = 0.0

    def key(self) -> str:
        """The rows cache's name suffix ("" when all are off)."""
        on = [f"{n}{v:g}" for n, v in (("e", self.enclosed_share), ("c", self.clean_share),
                                      ("d", self.dark_tint), ("f", self.faded)) if v]  # fmt: skip
        return "".join(f"-{o}" for o in on)


@dataclass
class Rows:
    """Per region: features of its views (VIEWS) [M, 3, F], kind, source
    index, drawn or real, and its folder (the data set's defect kind, "drawn")."""

    x: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    drawn: np.ndarray
    folder: np.ndarray

    def subset(self, rows: np.ndarray) -> Rows:
        return Rows(self.x[rows], self.kind[rows], self.source[rows], self.drawn[rows],
                    self.folder[rows])  # fmt: skip

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                      ("x", "kind", "source", "drawn", "folder")))  # fmt: skip


def blob(mask: np.ndarray, radius: int = BLOB_RADIUS) -> np.ndarray:
    """The mask grown by `radius` px (a fixed stand-in for an anomaly map's region)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(np.asarray(mask, np.uint8), k)


def map_blob(mask: np.ndarray, rng: np.random.Generator,
             sigma: tuple[float, float] = MAP_SIGMA) -> np.ndarray:  # fmt: skip
    """The region an anomaly map draws around a defect: a patch-level map is a blurred
    response to it, cut at some level, so a 2-px line becomes a rounded band ~10 px
    wide and a large area keeps its outline with a soft margin (the demo's map regions
    measure so: a 3-px line gets a 30-40 px wide blob at 256 px)."""
    m = np.asarray(mask, np.float32)
    soft = cv2.GaussianBlur(m, (0, 0), float(rng.uniform(sigma[0], sigma[1])))
    cut = soft >= float(rng.uniform(MAP_LEVEL[0], MAP_LEVEL[1])) * float(soft.max())
    return (cut | (m > 0)).astype(np.uint8)


# grown8: the v2 blob (evaluated only); refined_*: the first two through
# engine.defects.refine, as the describer sees them when its config says "refine";
# wide_blob: map_blob with WIDE_SIGMA (a strong defect's map region);
# kshot / refined_kshot (only with k-shot views, engine.training.kshot_regions): the real
# k-shot map region of a real region, as is and refined; a region the k-shot map missed
# and every drawn one hold their blob views there instead
VIEWS = ("mask", "blob", "grown8", "refined_mask", "refined_blob", "wide_blob", "kshot",
         "refined_kshot")  # fmt: skip
# the views the forest is fitted on and its cuts calibrated on (indices into VIEWS): the
# exact mask, the map-like blob and the wide one (a strong defect's map region)
TRAIN_VIEWS = (0, 1, 5)


def _views(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
           enclosed_share: float = 0.0) -> np.ndarray:  # fmt: skip
    """Features of the exact mask, of a map-like blob around it, of the mask grown by 8 px,
    of the first two refined (the pixels that stand out inside them) and of a wide
    map-like blob (drawn from a child of `rng`: the draws that follow stay v3's)."""
    planes = frame_planes(image, enclosed_share)  # one set of frame planes for every view
    mb = map_blob(mask, rng)
    wide = map_blob(mask, rng.spawn(1)[0], WIDE_SIGMA)
    masks = [mask, mb, blob(mask), refine_region(planes, mask), refine_region(planes, mb), wide]
    return np.stack([features_of(planes, m) for m in masks])


def real_rows(category: Path, source: int, min_area: int = 4,
              options: RowOptions = RowOptions()) -> Rows | None:  # fmt: skip
    """Ground-truth regions of a category's defect images, labelled with generic kinds."""
    x, kind, folder = [], [], []
    rng = np.random.default_rng([7, sum(map(ord, f"{category.parent.name}/{category.name}"))])
    for s in split_category(category, 0).evaluated:
        k = generic_kind(category.name, s.kind) if s.label == 1 else None
        if k is None or s.mask_path is None:
            continue
        image = load_rgb(s.path, WORK)
        for m in split_mask(load_mask(s, WORK).astype(bool), min_area=min_area):
            x.append(_views(image, m, rng, options.enclosed_share))
            kind.append(GENERIC_KINDS.index(k))
            folder.append(s.kind)
    if not x:
        return None
    n = len(x)
    return Rows(np.stack(x), np.array(kind), np.full(n, source), np.zeros(n, bool),
                np.array(folder))  # fmt: skip


def normal_images(category: Path) -> list[Path]:
    return _images(category / "train" / "good") or _images(category / "test" / "good")


def drawn_rows(originals: list[np.ndarray], name: str, source: int, count: int, seed: int,
               progress: bool = True, options: RowOptions = RowOptions()) -> Rows:  # fmt: skip
    """`count` defects drawn on normal images (WORK x WORK RGB), the kinds in turn."""
    if not originals:
        raise ValueError(f"{name}: no normal images to draw on")
    # one seed per product: adding a product does not change the others' drawings
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    x, kind = [], []
    for i in tqdm(range(count), desc=f"drawing {name}", disable=not progress, leave=False):
        k = GENERIC_KINDS[i % len(GENERIC_KINDS)]
        base = np.ascontiguousarray(augment_normal(originals[int(rng.integers(len(originals)))],
                                                   rng))  # fmt: skip
        img, mask = draw_defect(base, k, rng, [originals[int(rng.integers(len(originals)))]],
                                options.dark_tint, options.faded)  # fmt: skip
        if mask.sum() < 4 or _change(base, img, mask) < MIN_CHANGE:
            continue  # a drawing that left the pixels as they were teaches no kind
        x.append(_views(img, mask, rng, options.enclosed_share))
        kind.append(GENERIC_KINDS.index(k))
    n = len(x)
    return Rows(np.stack(x), np.array(kind), np.full(n, source), np.ones(n, bool),
                np.full(n, "drawn"))  # fmt: skip


def _change(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the mask of the largest channel change (grey levels)."""
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=-1)
    return float(diff[mask > 0].mean())


def plain_part_images(seed: int, n: int = PLAIN_PARTS, clean_share: float = 0.0
                      ) -> list[np.ndarray]:  # fmt: skip
    """The plain parts defects are drawn on (engine.training.plain_parts), seeded."""
    rng = np.random.default_rng([seed, sum(map(ord, PLAIN))])
    return [plain_part(rng, WORK, clean_share) for _ in range(n)]


def collect_rows(data: Path, drawn_per_category: int, seed: int, cache_dir: Path | None,
                 progress: bool = True, options: RowOptions = RowOptions()) -> Rows:  # fmt: skip
    """Every source's real regions and drawn regions (cached per category)."""
    parts: list[Rows] = []
    for s, cats in enumerate(SOURCES.values()):
        for rel in cats:
            cat = data / rel
            if not cat.is_dir():
                continue
            key = None
            if cache_dir is not None:
                key = cache_dir / (f"rows-v{ROWS_VERSION}-{cat.parent.name}-{cat.name}-"
                                   f"{drawn_per_category}-{seed}{options.key()}.npz")  # fmt: skip
                if key.is_file():
                    with np.load(key, allow_pickle=False) as z:
                        parts.append(Rows(z["x"], z["kind"], z["source"], z["drawn"],
                                          z["folder"]))  # fmt: skip
                    continue
            here = [r for r in (real_rows(cat, s, options=options),) if r is not None]
            if normal_images(cat):
                originals = [load_rgb(p, WORK) for p in normal_images(cat)]
                here.append(drawn_rows(originals, f"{cat.parent.name}/{cat.name}", s,
                                       drawn_per_category, seed, progress, options))  # fmt: skip
            if not here:
                continue
            rows = Rows.concat(here)
            if key is not None:
                key.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(key, **rows.__dict__)
            parts.append(rows)
    if not parts:
        raise FileNotFoundError(f"none of the data sets {sorted(SOURCES)} under {data}")
    # plain parts: drawn regions only, in training for every held-out source
    name = (f"rows-v{ROWS_VERSION}-{PLAIN}-{PLAIN_PARTS}-{drawn_per_category}-{seed}"
            f"{options.key()}.npz")  # fmt: skip
    key = None if cache_dir is None else cache_dir / name
    if key is not None and key.is_file():
        with np.load(key, allow_pickle=False) as z:
            parts.append(Rows(z["x"], z["kind"], z["source"], z["drawn"], z["folder"]))
    else:
        rows = drawn_rows(plain_part_images(seed, clean_share=options.clean_share), PLAIN,
                          len(SOURCES), drawn_per_category, seed, progress, options)  # fmt: skip
        if key is not None:
            key.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(key, **rows.__dict__)
        parts.append(rows)
    return Rows.concat(parts)


def add_kshot_views(rows: Rows, data: Path, cache_dir: Path | None,
                    progress: bool = True) -> tuple[Rows, np.ndarray]:  # fmt: skip
    """Rows with the views kshot and refined_kshot appended, and which rows hold a real
    k-shot map region there. Real rows come category by category in SOURCES order, as
    engine.training.kshot_regions lists each category's ground-truth regions."""
    from engine.training.kshot_regions import cached_kshot_views

    xs, ms = [], []
    for cats in SOURCES.values():
        for rel in cats:
            if (data / rel).is_dir():
                x, m = cached_kshot_views(data / rel, cache_dir, progress=progress)
                xs.append(x)
                ms.append(m)
    kx, km = np.concatenate(xs), np.concatenate(ms)
    real = np.flatnonzero(~rows.drawn)
    if len(real) != len(kx):
        raise ValueError(f"{len(kx)} k-shot views for {len(real)} real regions")
    extra = rows.x[:, [1, 4]].copy()  # the map-like blob's views where no k-shot region
    extra[real[km]] = kx[km]
    matched = np.zeros(len(rows.kind), bool)
    matched[real[km]] = True
    x = np.concatenate([rows.x[:, :6], extra], axis=1)
    return Rows(x, rows.kind, rows.source, rows.drawn, rows.folder), matched


def fit_forest(rows: Rows, seed: int, views: tuple[int, ...] = TRAIN_VIEWS) -> object:
    """A class-balanced random forest on the training views of every region (by default
    the exact mask, the map-like blob and the wide one)."""
    from sklearn.ensemble import RandomForestClassifier

    x = np.concatenate([rows.x[:, v] for v in views])
    y = np.concatenate([rows.kind] * len(views))
    forest = RandomForestClassifier(TREES, min_samples_leaf=MIN_LEAF, class_weight="balanced",
                                    random_state=seed, n_jobs=1)  # fmt: skip
    return forest.fit(x, y)


def kind_shares(forest: object, x: np.ndarray) -> np.ndarray:
    """[N, F] -> [N, len(GENERIC_KINDS)] (kinds absent from training: 0)."""
    out = np.zeros((len(x), len(GENERIC_KINDS)))
    out[:, forest.classes_] = forest.predict_proba(x)  # type: ignore[attr-defined]
    return out


def unclear_cut(conf: np.ndarray, correct: np.ndarray, precision: float = 0.5) -> float:
    """The lowest confidence above which held-out descriptions are right at least
    `precision` of the time: below it a region reads "unclear defect"."""
    if not len(conf):  # nothing to calibrate on (every answer already named): name none
        return 1.0 + 1e-6
    order = np.argsort(-conf, kind="stable")
    ranked = conf[order]
    hits = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # a cut names every answer at its confidence: judge it only past the last of a tie
    # (forest shares are averages of leaf shares, and ties among them do occur)
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
    ok = np.flatnonzero((hits >= precision) & last_of_tie)
    if not len(ok):
        return float(conf.max()) + 1e-6  # never right enough: everything is unclear
    return float(ranked[ok[-1]])


# [K, G]: which group (defect_kinds.KIND_GROUPS) each generic kind is in
GROUP_OF = np.array([[kind_group(k) == g for g in KIND_GROUPS] for k in GENERIC_KINDS], float)


def group_answers(probs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] kind shares -> the likeliest group's share and whether it is the true kind's
    group (what a group answer, "a scratch or a cut", is judged by)."""
    groups = probs @ GROUP_OF
    return groups.max(axis=1), groups.argmax(axis=1) == GROUP_OF[truth].argmax(axis=1)


def _per_source(probs: np.ndarray, truth: np.ndarray, folder: np.ndarray) -> dict:
    pred = probs.argmax(axis=1)
    present = sorted(set(truth.tolist()))
    return {
        "n_regions": int(len(truth)), "accuracy": 100 * float((pred == truth).mean()),
        "group_accuracy": 100 * float(group_answers(probs, truth)[1].mean()),
        "chance": 100 / len(GENERIC_KINDS),
        "majority_kind": 100 * max(float(np.mean(truth == k)) for k in present),
        "per_folder": {f: {"n": int(np.sum(folder == f)),
                           "acc": 100 * float(np.mean(pred[folder == f] == truth[folder == f])),
                           "said": _counts(pred[folder == f])}
                       for f in sorted(set(folder.tolist()))},
    }  # fmt: skip


def leave_one_source_out(rows: Rows, seed: int, precision: float,
                         views: tuple[int, ...] = TRAIN_VIEWS) -> dict:  # fmt: skip
    """Per source: accuracy on its REAL regions (each view of VIEWS the rows hold) of a
    forest fitted on the training `views` of the other sources only; the "unclear" cut
    calibrated on the held-out answers of those same views together, then the group cut
    on the answers the kind cut leaves unnamed (a group answer is right when the true
    kind is in the group). `unseen_cuts`: the same cuts calibrated without each source,
    applied to it (`_unseen_cuts`)."""
    results: dict = {"sources": {}}
    confs, hits, group_confs, group_hits, answer_source = [], [], [], [], []
    for s, name in enumerate(SOURCES):
        test = np.flatnonzero((rows.source == s) & ~rows.drawn)
        if not len(test):
            continue
        train = np.flatnonzero(rows.source != s)
        forest = fit_forest(rows.subset(train), seed, views)
        held = rows.subset(test)
        entry = {"n_train_regions": int(len(train))}
        for v, view in enumerate(VIEWS[: held.x.shape[1]]):
            probs = kind_shares(forest, held.x[:, v])
            entry[view] = _per_source(probs, held.kind, held.folder)
            if v in views:  # the cuts: on the views the describer is trained for
                confs.append(probs.max(axis=1))
                hits.append(probs.argmax(axis=1) == held.kind)
                g_conf, g_hit = group_answers(probs, held.kind)
                group_confs.append(g_conf)
                group_hits.append(g_hit)
                answer_source.append(np.full(len(test), s))
        results["sources"][name] = entry
    conf, correct = np.concatenate(confs), np.concatenate(hits)
    g_conf, g_hit = np.concatenate(group_confs), np.concatenate(group_hits)
    cut, group_cut = _cuts(conf, correct, g_conf, g_hit, precision)
    named, grouped = _answered(conf, g_conf, cut, group_cut)
    results["unclear_below"] = cut
    results["group_below"] = group_cut
    results["precision_target"] = precision
    results["named_share"] = 100 * float(named.mean())
    results["named_accuracy"] = 100 * float(correct[named].mean()) if named.any() else None
    results["group_named_share"] = 100 * float(grouped.mean())
    results["group_named_accuracy"] = (100 * float(g_hit[grouped].mean()) if grouped.any()
                                       else None)  # fmt: skip
    results["unclear_share"] = 100 * float(1 - (named.sum() + grouped.sum()) / len(conf))
    results["views"] = [VIEWS[v] for v in views]
    results["unseen_cuts"] = _unseen_cuts(conf, correct, g_conf, g_hit,
                                          np.concatenate(answer_source), precision)  # fmt: skip
    return results


def _answered(conf: np.ndarray, g_conf: np.ndarray, cut: float, group_cut: float
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Which answers the cuts name by their kind, and which by their group (as
    describer.mark_unclear does: the group only where the kind is not named)."""
    named = conf >= cut
    return named, ~named & (g_conf >= group_cut)


def _cuts(conf: np.ndarray, correct: np.ndarray, g_conf: np.ndarray, g_correct: np.ndarray,
          precision: float) -> tuple[float, float]:  # fmt: skip
    """The kind cut on held-out answers, then the group cut on those it leaves unnamed."""
    cut = unclear_cut(conf, correct, precision)
    unnamed = conf < cut
    return cut, unclear_cut(g_conf[unnamed], g_correct[unnamed], precision)


def _unseen_cuts(conf: np.ndarray, correct: np.ndarray, g_conf: np.ndarray,
                 g_correct: np.ndarray, source: np.ndarray, precision: float) -> dict:  # fmt: skip
    """How right the cuts are on a product they were not calibrated on: per source, both
    cuts calibrated on the other sources' held-out answers only, applied to its own. The
    pooled cuts reach `precision` by construction on the answers they were set on; this
    is the figure a new line can expect (one source's answers can set the pooled cuts)."""
    out: dict = {"sources": {}}
    tot = {"answers": 0, "named": 0, "named_right": 0, "grouped": 0, "grouped_right": 0}
    for s in np.unique(source):
        other, own = source != s, source == s
        if not other.any():  # one source only: nothing to calibrate on without it
            continue
        cut, group_cut = _cuts(conf[other], correct[other], g_conf[other], g_correct[other],
                               precision)  # fmt: skip
        named, grouped = _answered(conf, g_conf, cut, group_cut)
        named, grouped = named & own, grouped & own
        n = {"answers": int(own.sum()), "named": int(named.sum()),
             "named_right": int(correct[named].sum()), "grouped": int(grouped.sum()),
             "grouped_right": int(g_correct[grouped].sum())}  # fmt: skip
        out["sources"][list(SOURCES)[int(s)]] = {"unclear_below": cut, "group_below": group_cut,
                                                 **n}  # fmt: skip
        tot = {k: tot[k] + n[k] for k in tot}
    out["named_accuracy"] = (100 * tot["named_right"] / tot["named"] if tot["named"]
                             else None)  # fmt: skip
    out["group_named_accuracy"] = (100 * tot["grouped_right"] / tot["grouped"]
                                   if tot["grouped"] else None)  # fmt: skip
    out["named_share"] = 100 * tot["named"] / max(tot["answers"], 1)
    out["group_named_share"] = 100 * tot["grouped"] / max(tot["answers"], 1)
    return out


def _counts(pred: np.ndarray) -> dict[str, int]:
    return {GENERIC_KINDS[k]: int(n) for k, n in zip(*np.unique(pred, return_counts=True),
                                                     strict=True)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from engine.defects.describer_artifacts import save_forest_describer
    from engine.defects.kind_forest import from_sklearn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["build", "evaluate"])
    ap.add_argument("--data", type=Path, required=True, help="Folder holding the data sets.")
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--drawn", type=int, default=440, help="Drawn defects per category.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", type=float, default=0.6,
                    help="The share of named regions that should be right (the cut).")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--result", type=Path, default=None, help="LOSO JSON written here.")
    ap.add_argument("--exclude", action="append", default=[], choices=list(SOURCES),
                    help="build: leave a source out (to check it on unseen images).")
    ap.add_argument("--views", default=",".join(VIEWS[v] for v in TRAIN_VIEWS),
                    help="The views the forest is fitted and its cut calibrated on, of "
                         f"{', '.join(VIEWS)}; refined ones make it refine its regions.")
    ap.add_argument("--kshot", action="store_true",
                    help="Add each category's real k-shot map regions as views (kshot, "
                         "refined_kshot; engine.training.kshot_regions, cached in --cache-dir).")
    ap.add_argument("--enclosed", action="store_true",
                    help="Small off-foreground spots the part encloses read as on the part "
                         "(region_features.ENCLOSED_SHARE; the saved describer too).")  # fmt: skip
    ap.add_argument("--clean-parts", action="store_true",
                    help="Some plain parts clean: no noise, marks or light gradient "
                         "(plain_parts.CLEAN_SHARE).")  # fmt: skip
    ap.add_argument("--dark-stains", action="store_true",
                    help="Some stains dark and tinted (synthetic_defects.DARK_TINT).")  # fmt: skip
    ap.add_argument("--faded-stains", action="store_true",
                    help="Some stains faded towards grey (synthetic_defects.FADED).")
    args = ap.parse_args(argv)
    views = tuple(VIEWS.index(v) for v in args.views.split(","))
    options = RowOptions(ENCLOSED_SHARE if args.enclosed else 0.0,
                         CLEAN_SHARE if args.clean_parts else 0.0,
                         DARK_TINT if args.dark_stains else 0.0,
                         FADED if args.faded_stains else 0.0)  # fmt: skip
    rows = collect_rows(args.data, args.drawn, args.seed, args.cache_dir, options=options)
    matched = np.zeros(len(rows.kind), bool)
    if args.kshot:
        rows, matched = add_kshot_views(rows, args.data, args.cache_dir)
    elif max(views) >= rows.x.shape[1]:
        ap.error(f"--views {args.views} needs --kshot")
    if args.exclude:
        keep = np.flatnonzero(~np.isin(rows.source, [list(SOURCES).index(x)
                                                     for x in args.exclude]))  # fmt: skip
        rows = rows.subset(keep)
        matched = matched[keep]
    res = leave_one_source_out(rows, args.seed, args.precision, views)
    if args.kshot:
        res["kshot_matched"] = {n: int(matched[(rows.source == s) & ~rows.drawn].sum())
                                for s, n in enumerate(SOURCES)}  # fmt: skip
    res["command"] = {k: str(v) for k, v in vars(args).items()}
    body = json.dumps(res, indent=2)
    if args.result is not None:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(body + "\n")
    print(body)
    if args.action == "evaluate":
        return
    forest = from_sklearn(fit_forest(rows, args.seed, views), len(GENERIC_KINDS))
    # the first three views (mask, blob, grown8) and the trained ones
    shown = [v for v in VIEWS if v in VIEWS[:3] or VIEWS.index(v) in views]
    metrics = {"unclear_below": res["unclear_below"], "group_below": res["group_below"],
               "loso_named_share": res["named_share"],
               "loso_named_accuracy": res["named_accuracy"],
               "loso_group_named_share": res["group_named_share"],
               "loso_group_named_accuracy": res["group_named_accuracy"],
               "unseen_named_accuracy": res["unseen_cuts"]["named_accuracy"],
               "unseen_group_named_accuracy": res["unseen_cuts"]["group_named_accuracy"],
               "loso_accuracy": {n: {v: e[v]["accuracy"] for v in shown if v in e}
                                 for n, e in res["sources"].items()},
               "n_drawn": int(rows.drawn.sum()), "n_real": int((~rows.drawn).sum()),
               "trees": TREES, "min_samples_leaf": MIN_LEAF, "seed": args.seed,
               "drawn_per_category": args.drawn, "sources_left_out": args.exclude}  # fmt: skip
    metrics["views"] = [VIEWS[v] for v in views]
    if options != RowOptions():  # likewise
        metrics["row_options"] = options.__dict__
    refine = any(VIEWS[v].startswith("refined") for v in views)
    save_forest_describer(args.out, forest, list(FEATURE_NAMES), metrics, refine=refine,
                          enclosed_share=options.enclosed_share)  # fmt: skip
    print(f"default describer: {metrics['n_real']} real + {metrics['n_drawn']} drawn regions, "
          f"cuts {res['unclear_below']:.3f} (kind) and {res['group_below']:.3f} (group), "
          f"saved in {args.out}")


if __name__ == "__main__":
    main()
