"""Real k-shot map regions for the default describer's training (issue 15, step 3).

`map_blob` (engine.training.describer_default) stands in for the region an anomaly map
draws around a defect. Here the region is the real one: each category's k-shot runtime
(its first `shots` normal images, the demo's and `clad describe --reference`'s model,
threshold and region threshold calibrated by engine.scoring.kshot_calibration) scores its
defect images, the worker's region rule (engine.defects.regions.extract_regions at the
region threshold) cuts its map, and each ground-truth region gets the map region that holds
most of it. A ground-truth region that no map region covers enough has no k-shot view
(`matched` false): the k-shot map missed it, as it misses most magnetic-tile cracks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from engine.defects.defect_kinds import generic_kind
from engine.defects.refine import refine_region
from engine.defects.region_features import N_FEATURES, WORK, features_of, frame_planes
from engine.defects.regions import extract_regions, split_mask
from engine.training.datasets import load_mask, load_rgb, split_category

SHOTS = 4  # the demo's default
MIN_AREA = 16  # the worker's and `clad describe`'s region min_area (map pixels)
# a map region stands for a ground-truth region when it holds at least this share of it
MIN_COVER = 0.3
VERSION = 1  # cache key: bump when the matching or the views change


def kshot_views(category: Path, shots: int = SHOTS, progress: bool = True,
                min_area: int = 4) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """[M, 2, F] features of the matched k-shot map region of every ground-truth region
    (as is, refined), in describer_default.real_rows' order, and [M] matched flags
    (zeros where unmatched)."""
    from engine.scoring.builder import ScoringConfig
    from engine.scoring.kshot_calibration import calibrated_runtime
    from engine.scoring.visual_encoder import VisualEncoder

    split = split_category(category, shots)
    config = ScoringConfig(aug_shifts=())  # as the demo builds it
    encoder = VisualEncoder(config.backbone, config.stages)
    refs = [load_rgb(p) for p in split.references]
    runtime, calibrated = calibrated_runtime(refs, config, encoder)
    pixel = calibrated.pixel if calibrated.pixel is not None else calibrated.value
    # the same ground-truth regions as describer_default.real_rows (split with 0 shots:
    # every test image; the k-shot references are normal images, never defect ones)
    samples = [s for s in split_category(category, 0).evaluated
               if s.label == 1 and s.mask_path is not None
               and generic_kind(category.name, s.kind) is not None]  # fmt: skip
    x, matched = [], []
    for s in tqdm(samples, desc=f"k-shot {category.name}", disable=not progress, leave=False):
        frame = load_rgb(s.path)
        with torch.no_grad():
            amap = runtime(torch.from_numpy(frame[None])).maps[0].numpy()
        regions = [cv2.resize(r.mask.astype(np.uint8), (WORK, WORK),
                              interpolation=cv2.INTER_NEAREST)
                   for r in extract_regions(amap, pixel, MIN_AREA)]  # fmt: skip
        image = load_rgb(s.path, WORK)
        planes = frame_planes(image)
        for m in split_mask(load_mask(s, WORK).astype(bool), min_area=min_area):
            cover = [float((r[m > 0] > 0).mean()) for r in regions]
            best = int(np.argmax(cover)) if cover else -1
            if best < 0 or cover[best] < MIN_COVER:
                x.append(np.zeros((2, N_FEATURES), np.float32))
                matched.append(False)
                continue
            r = regions[best]
            x.append(np.stack([features_of(planes, r),
                               features_of(planes, refine_region(planes, r))]))
            matched.append(True)
    if not x:
        return np.zeros((0, 2, N_FEATURES), np.float32), np.zeros(0, bool)
    return np.stack(x), np.array(matched)


def cached_kshot_views(category: Path, cache_dir: Path | None, shots: int = SHOTS,
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """kshot_views, cached per category (the k-shot runtime's pass is minutes on CPU)."""
    key = None
    if cache_dir is not None:
        key = cache_dir / f"kshot-v{VERSION}-{category.parent.name}-{category.name}-{shots}.npz"
        if key.is_file():
            with np.load(key, allow_pickle=False) as z:
                return z["x"], z["matched"]
    x, matched = kshot_views(category, shots, progress)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(key, x=x, matched=matched)
    return x, matched
