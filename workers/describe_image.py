"""One image -> regions, descriptions and an overlay PNG (the body of `clad describe`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from engine.datasets import load_rgb
from engine.describer import describe_regions, frame_patch_embeddings
from engine.regions import Region, extract_regions, verdict_regions
from pipeline.heatmap_codec import render_overlay


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise OSError(f"cannot read mask {path}")
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127


def _fallback_note(region: Region) -> str:
    if not region.fallback:
        return ""
    return " [hottest area: no pixel passed the region threshold, low confidence]"


def describe_image(
    image: Path, *, mask: Path | None = None, model: Path | None = None,
    category: str | None = None, describer_dir: Path | None = None,
    threshold: float | None = None, min_area: int = 16,
) -> tuple[list[str], bytes]:  # fmt: skip
    """(printable lines, overlay PNG). Regions come from `mask` when given (a person
    designates them, as in the paper), else from the model's map by the worker's rule
    (engine.regions.verdict_regions): none when the image scores normal, at least one
    when anomalous. `threshold` overrides the model's region (pixel) threshold."""
    from engine.artifacts import load_model, resolve
    from engine.describer_artifacts import load_describer
    from engine.describer_train import make_feature_cache

    frame = load_rgb(image)
    runtime, version_dir, verdict = None, None, ""
    amap, score, image_threshold = None, 0.0, 0.0
    if model is not None:
        version_dir = resolve(model, category)
        loaded = load_model(version_dir)
        runtime, image_threshold = loaded.runtime, loaded.threshold
        threshold = loaded.pixel_threshold if threshold is None else threshold
        with torch.no_grad():
            out = runtime(torch.from_numpy(frame[None]))
        amap, score = out.maps[0].numpy(), float(out.scores[0])
    if mask is not None:
        given = _load_mask(mask, frame.shape[:2])
        regions: list[Region] = extract_regions(given.astype(np.float32), 0.5, min_area)
        amap = given.astype(np.float32) if amap is None else amap
        threshold = 0.5 if threshold is None else threshold
    elif amap is None or threshold is None:
        raise ValueError("without --mask a model (and its threshold) is needed")
    else:
        anomalous = score > image_threshold
        regions = verdict_regions(amap, anomalous=anomalous, threshold=threshold,
                                  min_area=min_area)  # fmt: skip
        verdict = (f" {'anomalous' if anomalous else 'normal'} (score {score:.3f}, threshold "
                   f"{image_threshold:.3f}, region threshold {threshold:.3f}),")
    lines = [f"{image.name}:{verdict} {len(regions)} region(s)"]
    labels = [f"{r.index + 1}" for r in regions]
    ddir = describer_dir or version_dir
    if ddir is not None and (Path(ddir) / "describer.pt").is_file() and regions:
        d = load_describer(ddir)
        if runtime is not None:
            emb = frame_patch_embeddings(runtime.encoder, runtime.preprocess,
                                         torch.from_numpy(frame[None]), runtime.pool)  # fmt: skip
        else:
            cache = make_feature_cache()
            emb = frame_patch_embeddings(cache.encoder, cache.preprocess,
                                         torch.from_numpy(frame[None]), cache.pool)  # fmt: skip
        phrases, _ = d.vocabulary.phrases()
        descs = describe_regions(d.describer, emb, np.stack([r.mask for r in regions]),
                                 d.vocabulary.keys, phrases)  # fmt: skip
        labels = [f"{r.index + 1}: {x.kind} {x.confidence:.2f}"
                  for r, x in zip(regions, descs, strict=True)]
        for r, x in zip(regions, descs, strict=True):
            lines.append(f"  [{r.index + 1}] bbox={r.bbox} area={r.area} peak={r.peak_score:.3f}"
                         f" -> {x.text!r} ({x.kind}, {x.confidence:.2f});"
                         f" runner-up {x.runner_up!r} ({x.runner_up_confidence:.2f})"
                         + _fallback_note(r))
    else:
        if regions:
            lines.append("  (no describer found: train one with `clad train-describer`)")
        lines += [f"  [{r.index + 1}] bbox={r.bbox} area={r.area} peak={r.peak_score:.3f}"
                  + _fallback_note(r) for r in regions]  # fmt: skip
    png = render_overlay(frame, amap, threshold=float(threshold),
                         boxes=[r.bbox for r in regions], masks=[r.mask for r in regions],
                         labels=labels)  # fmt: skip
    return lines, png
