"""Accuracy suite: every category of every MVTec-layout root, K-shot, with and without
line context, beside a plain nearest-neighbour memory bank, in one run.

    nice -n 10 .venv/bin/python -m bench.accuracy --data /work/shared/data [--shots 1,4]
        [--cache /tmp/clad-accuracy-cache] [--floors 0,0.5] [--category transistor]

Per category and shot count K (references: first K of train/good, else of test/good,
left out of the evaluated set, as `clad eval`; K = "all": every train/good image, only
where train/good exists, the bank cut to max_bank by the engine's greedy core-set; on a
shared 2-core machine run it with `--threads 1`: two threads make its many small steps
six times slower):
- plain: the reference baseline of issue 14 — EfficientNet-Lite0 block groups 2+4
  (stride 8 + 16) concatenated, 3x3 average pooling, cosine, one map, image score = mean
  of the top 1% map pixels, 320 px, no augmentation (the runtime's sigma-4 smoothing);
- engine: `ScoringConfig()` (the defaults `clad eval` and the worker use);
- engine+batch(f): each evaluated image also against all the other evaluated images
  (mutual scoring, engine.scoring.line_context, floor f);
- engine+online(f): a fixed shuffled order (seed 0); each image sees only the earlier
  ones that a `LineContext` admitted (bounded, admission-guarded, as in the worker);
- ctx-only batch/online (K=0 rows): no reference at all, context only, on the 1-shot
  evaluated set;
- plain+line, engine+line: the line protocol (engine.evaluation.line_protocol, issue 30):
  each evaluated image inside a seeded stream of the category's spare train/good frames
  (never the references) at --defect-share, through the worker's context path; a category
  with fewer than 20 spare frames is listed as skipped;
- engine+worker: the protocol the worker runs, line where the category allows it, online
  elsewhere.
The table carries published figures per category (ANCHORS, with their sources) beside.
Categories with more than --max-images (default 160) test images are scored on a
seeded draw of that many that keeps the defect share (magnetic_tile: 160 of 468), for
every method alike: the context search is quadratic in the images.
Metrics: image AUROC, pixel AUROC and AUPRO@0.3 on 256x256 maps (engine.evaluation.evaluate), and a
95% bootstrap interval over images (1000 resamples image, 200 pixel on binned scores).

Adoption rule for engine defaults: a change is adopted only when the suite mean (image
and pixel AUROC, at K=1 and K=4) improves and no category with 30 or more evaluated
images falls outside the 95% interval of the current default.

Features are cached on disk by network input (bench.feature_cache) and the pairwise
context distances by category, so a re-run after a scoring change takes minutes.
Writes bench/results/accuracy.json and bench/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.progress import Progress

from bench.feature_cache import FeatureStore
from engine.evaluation.evaluate import METRIC_SIZE, metric_map
from engine.evaluation.evaluate import subset_samples as subset
from engine.evaluation.line_protocol import (
    DEFAULT_DEFECT_SHARE,
    build_stream,
    score_stream,
    skip_reason,
    spare_frames,
)
from engine.evaluation.map_choice import MapChoice, choose_pixel_map, pooled_only
from engine.evaluation.metrics import aupro, auroc
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import (
    ContextConfig,
    LineContext,
    frame_descriptor,
    fuse,
    most_alike,
    reduce_context,
)
from engine.scoring.runtime_model import CladRuntime, patch_embeddings
from engine.training.datasets import (
    IMAGE_SUFFIXES,
    CategorySplit,
    find_categories,
    load_mask,
    load_rgb,
    split_category,
)

RESULTS = Path(__file__).parent / "results"
PLAIN = ScoringConfig(stages=(2, 4), pool=3, pixel_pool=None, aug_shifts=(), aug_rotations=(),
                      bank_share=1.0)  # the plain bank keeps every patch
STORE_STAGES = (2, 4)
# candidate defaults (step 2 of issue 14), scored pure K-shot beside the engine with
# `--variants NAME,...`; every one reads the same cached stage 2+4 features
VARIANTS: dict[str, ScoringConfig] = {
    "s24": ScoringConfig(stages=(2, 4)),  # strides 8+16 for image and pixel map
    "s24-pix": ScoringConfig(stages=(2, 4), pool=3, pixel_pool=3),  # one pooled 8+16 map
    "s4-pix3": ScoringConfig(pixel_pool=None),  # one pooled stride-16 map
    "s4-noaug": ScoringConfig(aug_shifts=(), aug_rotations=()),
    "s4-bank100": ScoringConfig(bank_share=1.0),  # the whole bank (the default cuts it)
}


# Published figures beside the suite (image / pixel AUROC, %), with their sources, from
# /work/shared/notes/anchors.md and issue 30: where the engine stands, not targets to tune to.
# The MVTec figures use the full official test splits; mvtec-sample is a subset.
ANCHORS: dict[str, tuple[float, float, str]] = {
    "bottle": (99.4, 94.3, "WinCLIP+ 1-shot"),
    "capsule": (83.5, 96.4, "WinCLIP+ 1-shot"),
    "grid": (99.6, 94.1, "WinCLIP+ 1-shot"),
    "leather": (100.0, 99.2, "WinCLIP+ 1-shot"),
    "transistor": (89.6, 90.0, "WinCLIP+ 1-shot"),
    "metal_plate": (98.9, 98.3, "STPM 1-shot (MPDD)"),
    "tire": (68.1, 97.7, "PatchCore full-shot, RGB"),
    "magnetic_tile": (97.5, 83.6, "PatchCore full-shot, RGB"),
}
ANCHOR_MEANS = (
    "Published 1-shot means over bottle, capsule, grid, leather, transistor, metal nut "
    "(anchors.md; IM-IAD benchmark, Accurate-WinCLIP README): WinCLIP+ (CLIP ViT-B/16+) "
    "95.1 / 92.1; CFA (WideResNet-50) 83.7 / 94.5; RegAD (ResNet-18) 83.8 / 91.1."
)
WORKER = "engine+worker"  # line where the category allows it, online (first floor) elsewhere


def roots_under(data: Path) -> list[Path]:
    """MVTec-layout roots: `data` itself, or its subfolders that hold categories."""
    data = Path(data)
    try:
        find_categories(data)
        return [data]
    except FileNotFoundError:
        pass
    out = []
    for sub in sorted(p for p in data.iterdir() if p.is_dir()):
        try:
            find_categories(sub)
            out.append(sub)
        except FileNotFoundError:
            continue
    return out


def suite_categories(data: Path, names: list[str] | None = None) -> list[Path]:
    """Every MVTec-layout category under `data` (only `names` when given); exits with the
    reason when there is none."""
    if not Path(data).is_dir():
        raise SystemExit(f"{data}: no such folder (--data: a folder of MVTec-layout categories)")
    cats = [c for r in roots_under(data) for c in find_categories(r)]
    if names:
        cats = [c for c in cats if c.name in set(names)]
    if not cats:
        raise SystemExit(f"no MVTec-layout category under {data}")
    return cats


# ---------------------------------------------------------------- metrics + bootstrap


def _binned_pixels(masks: np.ndarray, maps: np.ndarray, bins: int = 2000) -> tuple:
    """Per-image counts of normal / defect pixels per score bin [N, B] (bootstrap input)."""
    flat = maps.reshape(maps.shape[0], -1)
    sample = flat.ravel()[:: max(1, flat.size // 200_000)]
    edges = np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1)[1:-1]))
    b = np.searchsorted(edges, flat, side="right")
    nb = len(edges) + 1
    pos = np.zeros((flat.shape[0], nb), np.int64)
    neg = np.zeros((flat.shape[0], nb), np.int64)
    m = masks.reshape(masks.shape[0], -1).astype(bool)
    for i in range(flat.shape[0]):
        pos[i] = np.bincount(b[i][m[i]], minlength=nb)
        neg[i] = np.bincount(b[i][~m[i]], minlength=nb)
    return pos, neg


def _binned_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    tp, tn = pos.sum(), neg.sum()
    if tp == 0 or tn == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (tp * tn))


def bootstrap(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray | None, maps: np.ndarray | None,
    seed: int = 0, n_image: int = 1000, n_pixel: int = 200,
) -> dict[str, list[float] | None]:  # fmt: skip
    """95% intervals of image and pixel AUROC over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    vals = []
    for _ in range(n_image):
        i = rng.integers(0, n, n)
        if labels[i].min() != labels[i].max():
            vals.append(auroc(labels[i], scores[i]))
    img = [100 * float(np.percentile(vals, 2.5)), 100 * float(np.percentile(vals, 97.5))]
    pix = None
    if masks is not None and maps is not None and masks.any():
        pos, neg = _binned_pixels(masks, maps)
        pv = []
        for _ in range(n_pixel):
            i = rng.integers(0, n, n)
            v = _binned_auroc(pos[i].sum(0), neg[i].sum(0))
            if not math.isnan(v):
                pv.append(v)
        pix = [100 * float(np.percentile(pv, 2.5)), 100 * float(np.percentile(pv, 97.5))]
    return {"image_ci": img, "pixel_ci": pix}


def measure(labels: np.ndarray, masks: np.ndarray, scores: np.ndarray, maps: np.ndarray) -> dict:
    has = bool(masks.any())
    out = {
        "image_auroc": 100 * auroc(labels, scores),
        "pixel_auroc": 100 * auroc(masks, maps) if has else float("nan"),
        "aupro": 100 * aupro(masks, maps) if has else float("nan"),
    }
    out.update(bootstrap(labels, scores, masks if has else None, maps if has else None))
    return out


# ---------------------------------------------------------------- scoring on cached features


@torch.no_grad()
def embeddings(rt: CladRuntime, imgs: np.ndarray, batch: int = 16) -> tuple[torch.Tensor, ...]:
    """(image-grid embeddings [N, C, h, w], pixel-grid embeddings) of uint8 NHWC images."""
    emb, pemb = [], []
    for i in range(0, len(imgs), batch):
        feats = rt.encoder.forward_features(rt.preprocess(torch.from_numpy(imgs[i : i + batch])))
        e = patch_embeddings(feats, rt.pool)
        emb.append(e)
        pemb.append(patch_embeddings(feats, rt.pixel_pool) if rt.split_maps else e)
    return torch.cat(emb), torch.cat(pemb)


@torch.no_grad()
def finish_all(rt: CladRuntime, amap: torch.Tensor, pmap: torch.Tensor | None) -> tuple:
    """Grid maps -> (image scores [N], 256x256 maps [N, s, s]) exactly as the runtime."""
    scores, maps = [], []
    s = rt.input_size
    for i in range(0, amap.shape[0], 32):
        a = amap[i : i + 32]
        p = None if pmap is None else pmap[i : i + 32]
        feats = [a.unsqueeze(1)]  # only its batch size is read (no text branch here)
        out = rt.finish(feats, rt.w_visual * a, None if p is None else rt.w_visual * p, s, s)
        scores.append(out.scores.numpy())
        for m in out.maps.numpy():
            maps.append(cv2.resize(m, (METRIC_SIZE, METRIC_SIZE), interpolation=cv2.INTER_AREA))
    return np.concatenate(scores), np.stack(maps)


@torch.no_grad()
def pairwise(emb: torch.Tensor, chunk: int = 24) -> torch.Tensor:
    """D[n, m, p] = cosine distance of patch p of image n to its nearest patch of image m.

    One similarity block serves both directions (max over rows / columns), half the work.
    """
    n, c, h, w = emb.shape
    e = emb.flatten(2).transpose(1, 2).contiguous()  # [N, P, C]
    p = h * w
    d = torch.zeros(n, n, p, dtype=torch.float16)
    for i in range(n):
        for start in range(i + 1, n, chunk):
            part = e[start : start + chunk]  # [m, P, C]
            sim = torch.einsum("pc,mqc->mpq", e[i], part)  # [m, P_i, P_m]
            d[i, start : start + part.shape[0]] = (1 - sim.amax(dim=2)).half()
            d[start : start + part.shape[0], i] = (1 - sim.amax(dim=1)).half()
    return d


def cached_pairwise(cache: Path, tag: str, emb: torch.Tensor) -> torch.Tensor:
    digest = hashlib.blake2b(emb[:, :, ::4, ::4].contiguous().numpy().tobytes(), digest_size=8)
    path = cache / "pairwise" / f"{tag}-{emb.shape[0]}-{digest.hexdigest()}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    d = pairwise(emb)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(d, path)
    return d


def context_maps(
    dist: torch.Tensor, idx: list[int], ref: torch.Tensor | None, scale: float,
    cfg: ContextConfig, protocol: str, admit_scores: np.ndarray | None,
    image_score: object = None, members_of: dict[int, list[int]] | None = None, seed: int = 0,
    descriptors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Fused grid maps [N, P] of the evaluated images `idx` (indices into `dist`).

    `admit_scores` [N]: each image's reference-only image score, what admission looks at
    (None with no references: the fused score is used). batch: the context of an image
    is every other evaluated image whose admission score is in the lower
    `cfg.admit_quantile` of all of them (0 references: two passes, the second with the
    lowest-scoring images of the first). online: a seeded order, a LineContext fed
    with each image after it is scored; `members_of` (from the image-map pass) replays
    the same context for the pixel map. `ref` [N, P] reference maps (/ scale) or None.
    `descriptors` [N, C] (line_context.frame_descriptor of every image): with
    `cfg.search_frames`, each image is searched against only that many of its context
    images, the most alike, as the worker does.
    """
    n = len(idx)
    sub = dist[idx][:, idx].float()  # [n, n, P]
    desc = None if descriptors is None else descriptors[idx]

    def reduced(j: int, members: list[int]) -> torch.Tensor:
        if cfg.search_frames and desc is not None and len(members) > cfg.search_frames:
            pick = most_alike(desc[j][None], desc[members], cfg.search_frames)[0].tolist()
            chosen = [members[t] for t in pick]
            return reduce_context(sub[j, chosen][None], cfg.share, len(members))[0]
        return reduce_context(sub[j, members][None], cfg.share)[0]

    out = torch.zeros(n, sub.shape[2])
    replay = members_of is not None
    members_of = members_of if replay else {}
    if protocol == "batch":
        if not replay:
            if admit_scores is None:  # first pass: everything vouches, then re-select
                first, _ = context_maps(dist, idx, ref, scale, cfg.model_copy(
                    update={"admit_quantile": 1.0}), "batch", np.zeros(n))  # fmt: skip
                admit_scores = np.array([image_score(m) for m in first])  # type: ignore[operator]
            cut = np.quantile(admit_scores, cfg.admit_quantile)
            allowed = [k for k in range(n) if admit_scores[k] <= cut]
            for j in range(n):
                members_of[j] = [k for k in allowed if k != j]
        for j in range(n):
            ctx = None
            if len(members_of[j]) >= cfg.min_frames:
                ctx = reduced(j, members_of[j]) / scale
            out[j] = 0.0 if ref is None and ctx is None else fuse(
                None if ref is None else ref[j], ctx, cfg.floor)  # fmt: skip
        return out, {"members_of": members_of}
    order = np.random.default_rng(seed).permutation(n)
    line: LineContext[int] = LineContext(cfg)
    for t, j in enumerate(order):
        members = members_of[int(j)] if replay else line.items(now=float(t))
        members_of[int(j)] = members
        ctx = None
        if len(members) >= cfg.min_frames:
            ctx = reduced(int(j), members) / scale
        if ref is None and ctx is None:
            out[j] = 0.0  # nothing to compare with yet: the frame passes as normal
            fused_score = 0.0
        else:
            out[j] = fuse(None if ref is None else ref[j], ctx, cfg.floor)
            fused_score = math.nan if replay else image_score(out[j])  # type: ignore[operator]
        if not replay:  # admission as the worker does it
            score = fused_score if admit_scores is None else float(admit_scores[j])
            line.offer(int(j), score, now=float(t))
    info: dict = {"members_of": members_of}
    if not replay:
        info["admitted"] = len({m for ms in members_of.values() for m in ms})
        info["final_context"] = len(line)
        info["drift"] = line.drift
    return out, info


def image_scorer(rt: CladRuntime, h: int, w: int) -> object:
    """Grid map [P] -> the runtime's image score of that map."""
    s = rt.input_size

    def score(grid: torch.Tensor) -> float:
        m = grid.reshape(1, h, w)
        return float(rt.finish([m.unsqueeze(1)], rt.w_visual * m, None, s, s).scores[0])

    return score


Shots = int | str  # a count, or "all" (every train/good image)


def shot_order(k: Shots) -> tuple[int, int]:
    """Sort key: counts in order, "all" last."""
    return (1, 0) if k == "all" else (0, int(k))


def shot_count(cat: Path, k: Shots) -> int | None:
    """References for K = k in `cat`; None where "all" has no train/good to draw from."""
    if k != "all":
        return int(k)
    if split_category(cat, 0).reference_source != "train/good":
        return None
    return sum(1 for p in (cat / "train" / "good").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def run_category(
    cat: Path, shots: list[Shots], store: FeatureStore, cache: Path, floors: list[float],
    progress: Progress, task: object, variants: tuple[str, ...] = (), max_images: int = 0,
    context_frames: int = ContextConfig().max_frames,
    search_frames: int = ContextConfig().search_frames,
    engine_cfg: ScoringConfig | None = None,
    protocols: tuple[str, ...] = ("batch", "online", "line"),
    defect_share: float = DEFAULT_DEFECT_SHARE, skipped: list[str] | None = None,
    map_mix: tuple[float, ...] = (), map_source: str = "plain", label_choice: int = 0,
) -> list[dict]:  # fmt: skip
    root = cat.parent.name
    everything = subset(split_category(cat, 0).evaluated, max_images)
    paths = [s.path for s in everything]
    pos = {p: i for i, p in enumerate(paths)}
    size = ScoringConfig().input_size
    imgs = np.stack([load_rgb(p, size) for p in paths])
    masks = np.stack([load_mask(s, METRIC_SIZE) for s in everything])
    labels = np.array([s.label for s in everything])
    progress.update(task, description=f"{cat.name}: features")
    engine_cfg = engine_cfg or ScoringConfig()
    probe = build_runtime([imgs[0]], engine_cfg, encoder=store.view(engine_cfg.stages))
    emb, pemb = embeddings(probe, imgs)
    progress.update(task, description=f"{cat.name}: pairwise context distances")
    d_img = cached_pairwise(cache, f"{root}-{cat.name}-img", emb)
    d_pix = cached_pairwise(cache, f"{root}-{cat.name}-pix", pemb) if probe.split_maps else d_img
    descriptors = frame_descriptor(emb)  # what picks each image's searched context frames
    rows: list[dict] = []

    plain_maps: dict[Shots, np.ndarray] = {}
    # --label-choice: per K, the defect images an operator labelled first (seeded) and the
    # pixel map engine.evaluation.map_choice picks from them; rows on the rest of the images
    labelled: dict[Shots, set[int]] = {}
    choices: dict[Shots, MapChoice] = {}
    rest_rows: dict[tuple[Shots, str], dict] = {}

    def add(k: Shots, method: str, idx: list[int], scores: np.ndarray, maps: np.ndarray,
            extra: dict | None = None, pooled: np.ndarray | None = None) -> None:  # fmt: skip
        m = measure(labels[idx], masks[idx], scores, maps)
        extra = {k: v for k, v in (extra or {}).items() if k != "members_of"}
        rows.append({"root": root, "category": cat.name, "shots": k, "method": method,
                     "n_evaluated": len(idx), "n_anomalous": int(labels[idx].sum()),
                     **m, **(extra or {})})  # fmt: skip
        if method == "plain":
            plain_maps[k] = maps
        if k in labelled and method.split("+")[0] in ("plain", "engine", "s4-pix3") \
                and "batch" not in method:
            keep = [j for j, i in enumerate(idx) if i not in labelled[k]]
            rest = [idx[j] for j in keep]
            rest_rows[(k, method)] = {
                "root": root, "category": cat.name, "shots": k, "method": f"{method}@rest",
                "n_evaluated": len(rest), "n_anomalous": int(labels[rest].sum()),
                **measure(labels[rest], masks[rest], scores[keep], maps[keep])}
        # the map-path candidates (issue 30 item 2), image scores unchanged: the pixel map
        # mixed with the plain bank's reference-only map ("plain"), or with the engine's own
        # pooled image map, context included where the row has one ("pooled": no extra search)
        other = plain_maps.get(k) if map_source == "plain" else pooled
        if map_mix and method.startswith("engine") and other is not None:
            for w in map_mix:
                mixed = (1 - w) * maps + w * other
                rows.append({"root": root, "category": cat.name, "shots": k,
                             "method": f"{method}~mix{w:g}", "n_evaluated": len(idx),
                             "n_anomalous": int(labels[idx].sum()),
                             "image_auroc": m["image_auroc"],
                             "pixel_auroc": 100 * auroc(masks[idx], mixed)
                             if masks[idx].any() else float("nan"),
                             "aupro": float("nan"), "image_ci": m["image_ci"],
                             "pixel_ci": None})  # fmt: skip

    for k in shots:
        count = shot_count(cat, k)
        if count is None:
            progress.advance(task)
            continue
        split = split_category(cat, count)
        idx = [pos[s.path] for s in split.evaluated if s.path in pos]
        refs = [load_rgb(p, size) for p in split.references]
        scorers = [("plain", PLAIN), ("engine", engine_cfg)] + [(v, VARIANTS[v]) for v in variants]
        built: dict[str, CladRuntime] = {}
        if label_choice:
            defects = [i for i in idx if labels[i]]
            order = np.random.default_rng(0).permutation(len(defects))
            labelled[k] = {defects[j] for j in order[:label_choice]}
        for name, cfg in scorers:
            progress.update(task, description=f"{cat.name}: K={k} {name}")
            rt = built[name] = build_runtime(refs, cfg, encoder=store.view(cfg.stages))
            if name == "engine" and label_choice:
                chosen = sorted(labelled[k])
                choices[k] = choose_pixel_map(rt, list(imgs[chosen]), list(masks[chosen]))
            e, pe = (emb, pemb) if name == "engine" else embeddings(rt, imgs[idx])
            e, pe = (e[idx], pe[idx]) if name == "engine" else (e, pe)
            amap = torch.cat([rt.bank_map(e[i : i + 32]) for i in range(0, len(idx), 32)])
            pmap = None
            if rt.split_maps:
                pmap = torch.cat([rt.bank_map(pe[i : i + 32], pixel=True)
                                  for i in range(0, len(idx), 32)])  # fmt: skip
            scores, maps = finish_all(rt, amap, pmap)
            pooled = None
            if name == "engine" and map_mix and map_source == "pooled":
                pooled = finish_all(rt, amap, None)[1]
            add(k, name, idx, scores, maps, pooled=pooled)
            pure_scores = scores
            if name != "engine":
                continue
            h, w = e.shape[-2:]
            ref_a, ref_p = amap.flatten(1), None if pmap is None else pmap.flatten(1)
            for floor in floors:
                ccfg = ContextConfig(floor=floor, max_frames=context_frames,
                                     search_frames=search_frames)  # fmt: skip
                for protocol in [p for p in ("batch", "online") if p in protocols]:
                    progress.update(task, description=f"{cat.name}: K={k} {protocol} f={floor}")
                    a, info = context_maps(d_img, idx, ref_a, float(rt.scale), ccfg, protocol,
                                           pure_scores, image_scorer(rt, h, w),
                                           descriptors=descriptors)  # fmt: skip
                    p = None
                    if ref_p is not None:
                        p, _ = context_maps(
                            d_pix,
                            idx,
                            ref_p,
                            float(rt.pixel_scale),
                            ccfg,
                            protocol,
                            None,
                            members_of=info["members_of"],
                            descriptors=descriptors,
                        )
                        p = p.reshape(-1, h, w)
                    scores, maps = finish_all(rt, a.reshape(-1, h, w), p)
                    pooled = None
                    if map_mix and map_source == "pooled":
                        pooled = finish_all(rt, a.reshape(-1, h, w), None)[1]
                    add(k, f"engine+{protocol}(f={floor:g})", idx, scores, maps, info, pooled)
        if "line" in protocols:
            ccfg = ContextConfig(max_frames=context_frames, search_frames=search_frames)
            sub = replace(split, evaluated=[s for s in split.evaluated if s.path in pos])
            line_rows(cat, k, sub, idx, built, ccfg, defect_share, add, progress, task,
                      skipped if skipped is not None else [],
                      bool(map_mix) and map_source == "pooled")  # fmt: skip
        # context only (0 references), on the same evaluated images
        if "batch" in protocols and k != "all" and k == min(shots, key=shot_order):
            ccfg = ContextConfig(max_frames=context_frames, search_frames=search_frames)
            for protocol in ("batch", "online"):
                progress.update(task, description=f"{cat.name}: K=0 {protocol}")
                a, info = context_maps(d_img, idx, None, 1.0, ccfg, protocol, None,
                                       image_scorer(probe, *emb.shape[-2:]),
                                       descriptors=descriptors)  # fmt: skip
                p = None
                if probe.split_maps:
                    p, _ = context_maps(
                        d_pix, idx, None, 1.0, ccfg, protocol, None,
                        members_of=info["members_of"], descriptors=descriptors,
                    )  # fmt: skip
                    p = p.reshape(-1, *emb.shape[-2:])
                scores, maps = finish_all(probe, a.reshape(-1, *emb.shape[-2:]), p)
                add(0, f"ctx-only+{protocol}", idx, scores, maps, info)
        if k in choices:
            rows += label_choice_rows(k, choices[k], rest_rows)
        progress.advance(task)
    return rows


def label_choice_rows(k: Shots, choice: MapChoice,
                      rest_rows: dict[tuple[Shots, str], dict]) -> list[dict]:  # fmt: skip
    """The rows measured on the images left after the labelled ones ("<method>@rest"), and
    the engine with the pixel map chosen on the labelled ones ("<row>@rest~labels", a
    candidate of bench.map_rule against "<row>@rest": the fine map
    is the engine's own, the pooled one the s4-pix3 variant's, whose image scores are the
    engine's), pure and on the line."""
    out = []
    for (kk, method), row in rest_rows.items():
        if kk != k:
            continue
        out.append(row)
        if method.startswith("engine"):
            src = row if choice.map == "fine" else rest_rows.get(
                (k, method.replace("engine", "s4-pix3", 1)))
            if src is not None:
                out.append({**src, "method": f"{method}@rest~labels", "pixel_map": choice.map,
                            "map_choice": choice.as_dict()})  # fmt: skip
    return out


def line_rows(
    cat: Path, k: Shots, sub: CategorySplit, idx: list[int], built: dict[str, CladRuntime],
    ccfg: ContextConfig, defect_share: float, add: Callable, progress: Progress, task: object,
    skipped: list[str], pooled_line: bool = False,
) -> None:  # fmt: skip
    """The line protocol (engine.evaluation.line_protocol) for the plain bank and the engine
    on `sub`, the split's evaluated images `idx` of the suite; rows go through `add`, a
    skip into `skipped`."""
    spare = spare_frames(cat, sub)
    reason = skip_reason(spare)
    if reason is not None:
        skipped.append(f"{cat.parent.name}/{cat.name} K={k}: {reason}")
        return
    stream = build_stream(sub, spare, defect_share, lead_in=ccfg.max_frames)
    share = stream.defect_share([s.label for s in sub.evaluated])
    for name, rt in built.items():  # plain, engine, then any --variants
        progress.update(task, description=f"{cat.name}: K={k} {name}+line "
                                          f"({len(stream.frames)} frames)")  # fmt: skip
        scores, maps = score_stream(rt, sub, stream, rt.input_size, ccfg, metric_map)
        pooled = None
        if name == "engine" and pooled_line and rt.split_maps:
            pooled = score_stream(pooled_only(rt), sub, stream, rt.input_size, ccfg,
                                  metric_map)[1]
        add(k, f"{name}+line", idx, scores, maps,
            {"stream_frames": len(stream.frames), "stream_defect_share": share,
             "spare_frames": len(spare)}, pooled)  # fmt: skip


def worker_rows(rows: list[dict], floor_label: str, suffix: str = "") -> list[dict]:
    """Per category and K, the protocol the worker runs: the engine's line row where the
    category has one, else its online row (floor `floor_label`), as method WORKER; with
    `suffix` (e.g. "@rest~labels") from those rows' variants of that name."""
    out = []
    for key in dict.fromkeys((r["root"], r["category"], r["shots"]) for r in rows):
        sel = {r["method"]: r for r in rows if (r["root"], r["category"], r["shots"]) == key}
        src = (sel.get("engine+line" + suffix)
               or sel.get(f"engine+online(f={floor_label})" + suffix))  # fmt: skip
        if src is not None:
            out.append({**src, "method": WORKER + suffix, "from": src["method"]})
    return out


def mean_rows(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["shots"], r["method"]) for r in rows}, key=lambda x: (shot_order(x[0]), x[1]))
    for k, method in keys:
        sel = [r for r in rows if r["shots"] == k and r["method"] == method]
        out.append({"shots": k, "method": method, "n_categories": len(sel), **{
            m: float(np.nanmean([r[m] for r in sel]))
            for m in ("image_auroc", "pixel_auroc", "aupro")}})  # fmt: skip
    return out


def _below(cand: dict, ref: dict) -> bool:
    if cand["image_auroc"] < ref["image_ci"][0]:
        return True
    return bool(ref["pixel_ci"]) and cand["pixel_auroc"] < ref["pixel_ci"][0]


def adoption(rows: list[dict], candidate: str, base: str = "engine") -> list[str]:
    """The adoption rule, per K: mean image and pixel AUROC both up (or equal), and no
    category with 30+ evaluated images below the lower end of the base's interval."""
    lines = []
    for k in sorted({r["shots"] for r in rows if r["method"] == candidate}, key=shot_order):
        cand = {r["category"]: r for r in rows if r["shots"] == k and r["method"] == candidate}
        ref = {r["category"]: r for r in rows if r["shots"] == k and r["method"] == base}
        cats = sorted(set(cand) & set(ref))
        if not cats:
            continue
        d_img = np.nanmean([cand[c]["image_auroc"] - ref[c]["image_auroc"] for c in cats])
        d_pix = np.nanmean([cand[c]["pixel_auroc"] - ref[c]["pixel_auroc"] for c in cats])
        worse = [c for c in cats if ref[c]["n_evaluated"] >= 30 and _below(cand[c], ref[c])]
        ok = d_img >= 0 and d_pix >= 0 and not worse
        lines.append(f"- {candidate} vs {base}, K={k}: mean image {d_img:+.1f}, pixel "
                     f"{d_pix:+.1f}; below the interval: {worse or 'none'} -> "
                     f"{'ADOPT' if ok else 'keep'}")  # fmt: skip
    return lines


def _f(v: float) -> str:
    return "—" if v is None or v != v else f"{v:.1f}"


def _label_row(method: str) -> bool:
    return "@rest" in method or "~labels" in method


LABEL_COLUMNS = ("plain@rest", "engine@rest", "engine@rest~labels",
                 "plain+line@rest", "engine+line@rest", "engine+line@rest~labels",
                 f"{WORKER}@rest", f"{WORKER}@rest~labels")  # fmt: skip


def label_choice_table(rows: list[dict], means: list[dict]) -> list[str]:
    """--label-choice: the map each category's labelled defects chose, and the rows on the
    images left (pixel AUROC first: the choice changes only the map)."""
    chosen = [r for r in rows if r["method"] == "engine@rest~labels"]
    if not chosen:
        return []
    lines = ["Pixel map chosen from labelled defects (engine.evaluation.map_choice, "
             "`--label-choice`): pixel / image AUROC on the images left after the labelled "
             "ones; the choice's evidence is the pixel AUROC of both maps on the labelled "
             "images, against the references alone.", ""]  # fmt: skip
    for k in sorted({r["shots"] for r in chosen}, key=shot_order):
        lines += [f"#### K = {k}", "", "| category | chosen (fine / pooled on labels) | "
                  + " | ".join(LABEL_COLUMNS) + " |", "|---|---|" + "---|" * len(LABEL_COLUMNS)]
        for r in (r for r in chosen if r["shots"] == k):
            sel = {x["method"]: x for x in rows if x["shots"] == k
                   and (x["root"], x["category"]) == (r["root"], r["category"])}  # fmt: skip
            c = r["map_choice"]
            ev = (f" ({_f(c['fine_auroc'])} / {_f(c['pooled_auroc'])})"
                  if c.get("fine_auroc") is not None else "")  # fmt: skip
            cells = [f"{_f(sel[m]['pixel_auroc'])} / {_f(sel[m]['image_auroc'])}"
                     if m in sel else "" for m in LABEL_COLUMNS]  # fmt: skip
            lines.append(f"| {r['root']}/{r['category']} | {c['map']}{ev} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        mean = {m["method"]: m for m in means if m["shots"] == k}
        lines.append("| **mean** | | " + " | ".join(
            f"**{_f(mean[m]['pixel_auroc'])} / {_f(mean[m]['image_auroc'])}** "
            f"({mean[m]['n_categories']} cat.)" if m in mean else "" for m in LABEL_COLUMNS)
            + " |")  # fmt: skip
        lines.append("")
    return lines


def markdown(rows: list[dict], means: list[dict], command: str,
             skipped: list[str] | None = None) -> str:  # fmt: skip
    cats = list(dict.fromkeys(f"{r['root']}/{r['category']}" for r in rows))
    lines = [f"Command: `{command}`", "", "image / pixel AUROC (AUPRO in the mean row); "
             "'published' = a figure from the literature on the full official test split "
             "(source in the cell), beside, not a target to tune to", ""]  # fmt: skip
    for k in sorted({r["shots"] for r in rows}, key=shot_order):
        methods = list(dict.fromkeys(r["method"] for r in rows
                                     if r["shots"] == k and not _label_row(r["method"])))
        lines += [f"### K = {k}", "",
                  "| category | n (anom.) | " + " | ".join(methods) + " | published |",
                  "|---|---|" + "---|" * (len(methods) + 1)]  # fmt: skip
        for c in cats:
            sel = {r["method"]: r for r in rows
                   if r["shots"] == k and f"{r['root']}/{r['category']}" == c}  # fmt: skip
            if not sel:
                continue
            any_r = next(iter(sel.values()))
            cells = [f"{_f(sel[m]['image_auroc'])} / {_f(sel[m]['pixel_auroc'])}"
                     if m in sel else "" for m in methods]  # fmt: skip
            anchor = ANCHORS.get(any_r["category"])
            pub = f"{_f(anchor[0])} / {_f(anchor[1])} ({anchor[2]})" if anchor else "—"
            lines.append(f"| {c} | {any_r['n_evaluated']} ({any_r['n_anomalous']}) | "
                         + " | ".join(cells) + f" | {pub} |")  # fmt: skip
        mean = {m["method"]: m for m in means if m["shots"] == k}
        cells = [f"**{_f(mean[m]['image_auroc'])} / {_f(mean[m]['pixel_auroc'])}** "
                 f"({_f(mean[m]['aupro'])}, {mean[m]['n_categories']} cat.)"
                 for m in methods]  # fmt: skip
        lines += ["| **mean** | | " + " | ".join(cells) + " | see below |", ""]
    lines += [ANCHOR_MEANS, "",
              f"`{WORKER}`: the protocol the worker runs, the engine's line row where the "
              "category allows it, its online row elsewhere. Line rows: each test image inside "
              "a seeded stream of the category's spare train/good frames "
              "(engine.evaluation.line_protocol); their means are over the categories that "
              "have them.", ""]  # fmt: skip
    if skipped:
        lines += ["Line protocol skipped:", ""] + [f"- {s}" for s in skipped] + [""]
    lines += label_choice_table(rows, means)
    lines += ["Adoption rule against the engine default (pure K-shot):", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        if method not in ("engine", WORKER) and not method.startswith("ctx-only") \
                and not _label_row(method):
            lines += adoption(rows, method)
    lines += ["", "95% bootstrap intervals (image AUROC) of the engine default:", ""]
    for r in rows:
        if r["method"] == "engine":
            ci = r["image_ci"]
            lines.append(f"- {r['root']}/{r['category']} K={r['shots']}: "
                         f"{_f(r['image_auroc'])} [{_f(ci[0])}, {_f(ci[1])}]")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--shots", default="1,4,all", help='counts, and "all" = every train/good')
    ap.add_argument("--floors", default="0,0.5")
    ap.add_argument("--category", action="append", default=None)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/clad-accuracy-cache"))
    ap.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-images",
        type=int,
        default=160,
        help="per category, a seeded draw keeping the defect share (0 = all)",
    )
    ap.add_argument("--variants", default="", help=f"extra pure configs: {sorted(VARIANTS)}")
    ap.add_argument(
        "--context-frames",
        type=int,
        default=ContextConfig().max_frames,
        help="line-context size of the online protocol (the worker's default)",
    )
    ap.add_argument(
        "--search-frames",
        type=int,
        default=ContextConfig().search_frames,
        help="context frames each image is searched against (0 = all)",
    )
    ap.add_argument(
        "--bank-share",
        type=float,
        default=ScoringConfig().bank_share,
        help="ScoringConfig.bank_share of the engine rows, context rows included",
    )
    ap.add_argument(
        "--protocols",
        default="batch,online,line",
        help="context protocols beside pure K-shot: batch, online, line (comma-separated)",
    )
    ap.add_argument(
        "--defect-share",
        type=float,
        default=DEFAULT_DEFECT_SHARE,
        help="line protocol: defective share of the stream after its lead-in",
    )
    ap.add_argument(
        "--map-mix",
        default="",
        help="map-path candidates: weights w, each engine row also scored with the pixel map "
             "(1-w) x its own + w x the plain bank's reference-only map (image scores kept)",
    )
    ap.add_argument("--map-source", choices=("plain", "pooled"), default="plain",
                    help="what --map-mix mixes in: the plain bank's reference-only map, or "
                         "the engine's own pooled image map (context included)")
    ap.add_argument("--label-choice", type=int, default=0, metavar="N",
                    help="rows with the pixel map engine.evaluation.map_choice picks from N "
                         "labelled defect images per category and K (seeded; they leave the "
                         "evaluated set of those rows: '<row>@rest', '<row>@rest~labels')")
    args = ap.parse_args()
    protocols = tuple(p for p in args.protocols.split(",") if p)
    unknown = set(protocols) - {"batch", "online", "line"}
    if unknown:
        raise SystemExit(f"unknown protocols {sorted(unknown)}: batch, online, line")
    engine_cfg = ScoringConfig(bank_share=args.bank_share)
    torch.set_num_threads(args.threads)
    shots: list[Shots] = [s if s == "all" else int(s) for s in args.shots.split(",")]
    floors = [float(f) for f in args.floors.split(",")]
    cats = suite_categories(args.data, args.category)
    # small categories first: their rows are in the partial file within minutes
    cats.sort(key=lambda c: len(split_category(c, 0).evaluated))
    store = FeatureStore(ScoringConfig().backbone, STORE_STAGES, args.cache / "features")
    variants = tuple(v for v in args.variants.split(",") if v)
    if args.label_choice and "s4-pix3" not in variants:
        variants += ("s4-pix3",)  # the pooled map the choice may pick
    t0 = time.perf_counter()
    rows: list[dict] = []
    skipped: list[str] = []
    with Progress() as progress:
        task = progress.add_task("suite", total=len(cats) * len(shots))
        for cat in cats:
            rows += run_category(
                cat,
                shots,
                store,
                args.cache,
                floors,
                progress,
                task,
                variants,
                args.max_images,
                args.context_frames,
                args.search_frames,
                engine_cfg,
                protocols,
                args.defect_share,
                skipped,
                tuple(float(w) for w in args.map_mix.split(",") if w),
                args.map_source,
                args.label_choice,
            )
            partial = args.out.with_suffix(".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(rows, indent=1, default=lambda x: None) + "\n")
    if "online" in protocols:
        rows += worker_rows(rows, f"{floors[0]:g}")
        if args.label_choice:
            rows += worker_rows(rows, f"{floors[0]:g}", "@rest")
            rows += worker_rows(rows, f"{floors[0]:g}", "@rest~labels")
    means = mean_rows(rows)
    command = "python -m bench.accuracy " + " ".join(
        f"--{k} {v}" for k, v in (("data", args.data), ("shots", args.shots),
                                  ("floors", args.floors), ("max-images", args.max_images),
                                  ("variants", args.variants),
                                  ("context-frames", args.context_frames),
                                  ("search-frames", args.search_frames),
                                  ("bank-share", args.bank_share),
                                  ("protocols", args.protocols),
                                  ("defect-share", args.defect_share),
                                  ("label-choice", args.label_choice or ""))
        if v != "")  # fmt: skip
    payload = {"command": command, "engine_config": engine_cfg.model_dump(mode="json"),
               "plain_config": PLAIN.model_dump(mode="json"),
               "context_config": ContextConfig(max_frames=args.context_frames,
                                               search_frames=args.search_frames)
               .model_dump(mode="json"),
               "seconds": time.perf_counter() - t0, "feature_cache_hits": store.hits,
               "feature_cache_misses": store.misses, "line_skipped": skipped,
               "categories": rows, "mean": means}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=lambda x: None) + "\n")
    md = markdown(rows, means, command, skipped)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s, feature cache "
          f"{store.hits} hits / {store.misses} misses)")  # fmt: skip


if __name__ == "__main__":
    main()
