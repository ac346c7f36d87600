"""The describe stage's CPU per region and per frame: the default describer's region
features as the worker computes them now (engine.defects.region_features: the frame's
planes once per frame, each region on its window) against the whole-frame
implementation of before (engine.defects.region_features_reference, once per region),
interleaved in one run.

    .venv/bin/python -m bench.describe [--repeats 5] [--frames 60] [--gt] [--all-data]

Regions: the worker's own on mvtec-sample/bottle, as bench.pipeline makes them (the
k-shot CLAD engine of 4 references, the frame resized to the engine's input, the map
at the stored size, the verdict regions of workers.streaming.verdicts); with --gt also
the ground-truth regions of mvtec-sample (exact masks and grown by 8 px, the two views
the describer was trained on) on frames at 320 px; with --all-data every ground-truth
region of the describer's training sources, at its training and the worker's sizes, once
(a few minutes: the check that both paths agree). Per set: process CPU ms per region
and per frame with regions (median over the repeats), the forest and vocabulary search
beside them, and whether both paths give the same features and kinds. Also the words of
the regions no kind is named for (engine.defects.region_facts, issue 29: "unnamed: a dark
thin line, 62 px long, at the left edge"): their CPU per unnamed region, and the describe
stage per frame (features + search) without and with them.
Writes bench/results/describe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from engine.defects import region_features_reference as reference
from engine.defects import rle
from engine.defects.defect_kinds import UNCLEAR
from engine.defects.describer import embed_regions, mark_unclear, search_descriptions
from engine.defects.describer_artifacts import LoadedDescriber, load_default_describer
from engine.defects.region_facts import facts_text, region_facts
from engine.defects.shape_describer import pixel_input

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mvtec-sample"

Frame = tuple[np.ndarray, list[np.ndarray]]  # RGB frame, its region masks


def worker_regions(n_frames: int, min_area: int, backend: str) -> list[Frame]:
    """Frames of mvtec-sample/bottle with the regions the worker finds on them."""
    from workers.demo.data import discover, load_rgb
    from workers.demo.run import build_engines
    from workers.streaming.regions import find_regions
    from workers.streaming.scoring import region_threshold_of
    from workers.streaming.verdicts import map_size

    product = discover(DATA / "bottle", shots=4)[0]
    engine = build_engines([product], backend=backend, max_batch=8)["bottle"]
    s = engine.input_size
    out: list[Frame] = []
    paths = product.frames[:n_frames]
    for start in range(0, len(paths), 8):
        rgb = [load_rgb(p) for p in paths[start : start + 8]]
        small = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in rgb])
        scores, maps = engine.infer(small)
        for frame, full, score, small_map in zip(small, rgb, scores, maps, strict=True):
            h, w = full.shape[:2]
            mw, mh = map_size(w, h)
            amap = cv2.resize(np.asarray(small_map, np.float32), (mw, mh),
                              interpolation=cv2.INTER_LINEAR)  # fmt: skip
            regions = find_regions(
                amap,
                anomalous=float(score) > engine.threshold,
                threshold=region_threshold_of(engine),
                min_area=max(1, round(min_area / (w / mw * h / mh))),
            )
            if regions:
                out.append((frame, [rle.decode(r.mask_rle) for r in regions]))
    return out


def ground_truth_regions(categories: list[Path], size: int = 320,
                         mask_size: int = 320) -> list[Frame]:  # fmt: skip
    """The ground-truth regions of the categories, exact and grown by 8 px at 256, frames
    at `size` and masks at `mask_size`."""
    from engine.defects.regions import split_mask
    from engine.training.datasets import load_mask, load_rgb, split_category
    from engine.training.describer_default import blob

    out: list[Frame] = []
    for cat in categories:
        for s in split_category(cat, 0).evaluated:
            if s.label != 1 or s.mask_path is None:
                continue
            masks = split_mask(load_mask(s, mask_size).astype(bool), min_area=4)
            grown = [blob(m, round(8 * mask_size / reference.WORK)) > 0 for m in masks]
            if masks:
                out.append((load_rgb(s.path, size), masks + grown))
    return out


def before(frames: list[Frame]) -> list[np.ndarray]:
    """The describer's loop before: the whole-frame features, once per region."""
    return [np.stack([reference.region_features(f, m) for m in ms]) for f, ms in frames]


def after(describer: LoadedDescriber) -> Callable[[list[Frame]], list[np.ndarray]]:
    """The worker's call now (workers.streaming.descriptions: embed_regions per frame)."""

    def run(frames: list[Frame]) -> list[np.ndarray]:
        return [embed_regions(describer.describer, pixel_input(f[None]), np.stack(ms)).numpy()
                for f, ms in frames]  # fmt: skip

    return run


def cpu_ms(fn: Callable[[], object]) -> float:
    started = time.process_time()
    fn()
    return (time.process_time() - started) * 1000


def measure(name: str, frames: list[Frame], loaded: LoadedDescriber, repeats: int) -> dict:
    n_regions = sum(len(ms) for _, ms in frames)
    new = after(loaded)
    old_feats, new_feats = before(frames), new(frames)  # warm-up, and the comparison
    x_old, x_new = np.concatenate(old_feats), np.concatenate(new_feats)
    phrases, _ = loaded.vocabulary.phrases()
    kinds = loaded.vocabulary.keys
    import torch

    def search(x: np.ndarray) -> list:
        return search_descriptions(loaded.describer, torch.from_numpy(x), kinds, phrases)

    same_kinds = [(a.kind, round(a.confidence, 6)) == (b.kind, round(b.confidence, 6))
                  for a, b in zip(search(x_old), search(x_new), strict=True)]  # fmt: skip
    described = mark_unclear(search(x_new), loaded.unclear_below, loaded.group_below)
    region_frames = [(f, m) for f, ms in frames for m in ms]
    unnamed = [fm for fm, d in zip(region_frames, described, strict=True) if d.kind == UNCLEAR]

    def facts() -> list[str]:  # as the worker: mask at its stored size, frame at input size
        return [facts_text(region_facts(m, f)) for f, m in unnamed]

    t_old, t_new, t_search, t_facts = [], [], [], []
    for _ in range(repeats):  # interleaved: load drifts on a shared machine
        t_old.append(cpu_ms(lambda: before(frames)))
        t_new.append(cpu_ms(lambda: new(frames)))
        t_search.append(cpu_ms(lambda: search(x_new)))
        t_facts.append(cpu_ms(facts))
    old, fresh, srch, fct = (float(np.median(t)) for t in (t_old, t_new, t_search, t_facts))
    row = {
        "set": name, "frames": len(frames), "regions": n_regions,
        "features_before_ms_per_region": old / n_regions,
        "features_after_ms_per_region": fresh / n_regions,
        "features_before_ms_per_frame": old / len(frames),
        "features_after_ms_per_frame": fresh / len(frames),
        "speedup": old / fresh, "search_ms_per_region": srch / n_regions,
        "max_abs_feature_diff": float(np.abs(x_old - x_new).max()),
        "identical_features": bool(np.array_equal(x_old, x_new)),
        "same_kind_and_confidence": f"{sum(same_kinds)}/{len(same_kinds)}",
        "cpu_ms_runs_before": t_old, "cpu_ms_runs_after": t_new,
        "unnamed_regions": len(unnamed),
        "facts_ms_per_unnamed_region": fct / len(unnamed) if unnamed else None,
        "describe_ms_per_frame_without_facts": (fresh + srch) / len(frames),
        "describe_ms_per_frame_with_facts": (fresh + srch + fct) / len(frames),
    }  # fmt: skip
    print(f"{name}: {len(frames)} frames, {n_regions} regions | features CPU ms per region "
          f"{row['features_before_ms_per_region']:.2f} -> "
          f"{row['features_after_ms_per_region']:.2f}, per frame "
          f"{row['features_before_ms_per_frame']:.2f} -> {row['features_after_ms_per_frame']:.2f}"
          f" ({row['speedup']:.2f}x) | forest+search {row['search_ms_per_region']:.2f} ms/region"
          f" | max |diff| {row['max_abs_feature_diff']:.3g}, same kind and confidence "
          f"{row['same_kind_and_confidence']}", flush=True)  # fmt: skip
    print(f"  unnamed regions {len(unnamed)}/{n_regions}, their facts "
          f"{fct / max(len(unnamed), 1):.3f} ms each | describe stage per frame (features + "
          f"search) {row['describe_ms_per_frame_without_facts']:.2f} ms, with the facts "
          f"{row['describe_ms_per_frame_with_facts']:.2f} ms", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--frames",
        type=int,
        default=60,
        help="bottle frames through the engine (those with regions count)",
    )
    parser.add_argument(
        "--gt", action="store_true", help="also the ground-truth regions of mvtec-sample"
    )
    parser.add_argument(
        "--all-data",
        action="store_true",
        help="also every ground-truth region of the describer's training sources in "
        "/work/shared/data (magnetic tile's 442 included), at training (256/256) and worker "
        "(frame 320, map 160) sizes, once: the check that both paths agree",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "describe.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # the features are single-threaded numpy/OpenCV either way
    cv2.setNumThreads(1)
    from pipeline.settings import load_settings

    model = load_settings().model  # the worker's backend and region size
    loaded = load_default_describer()
    regions = worker_regions(args.frames, model.min_region_area_px, model.backend)
    sets = [("worker regions, mvtec-sample/bottle", regions, args.repeats)]
    if args.gt:
        sample = sorted(d for d in DATA.iterdir() if d.is_dir())
        sets.append(("ground-truth regions, mvtec-sample (exact + grown)",
                     ground_truth_regions(sample), args.repeats))  # fmt: skip
    if args.all_data:
        from engine.training.describer_default import SOURCES

        cats = [DATA.parent / rel for rels in SOURCES.values() for rel in rels]
        for size, mask_size in ((256, 256), (320, 160)):
            sets.append((f"all ground-truth regions of the sources, frame {size} masks "
                         f"{mask_size} (exact + grown)",
                         ground_truth_regions(cats, size, mask_size), 1))  # fmt: skip
    load_before = os.getloadavg()
    rows = [measure(name, frames, loaded, n) for name, frames, n in sets if frames]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "cpus": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "repeats": args.repeats, "results": rows,
    }, indent=2) + "\n")  # fmt: skip
    print(f"load average before {load_before}, after {os.getloadavg()}; wrote {args.out}")


if __name__ == "__main__":
    main()
