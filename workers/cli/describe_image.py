"""One image -> regions, descriptions and an overlay PNG (the body of `clad describe`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from engine.defects.defect_kinds import UNCLEAR
from engine.defects.describer import describe_regions, frame_patch_embeddings
from engine.defects.region_facts import facts_text, region_facts
from engine.defects.regions import Region, extract_regions, verdict_regions
from engine.training.datasets import load_rgb
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


def _facts(region: Region, frame: np.ndarray, mm_per_px: float | None) -> str:
    """A region's shape, size, contrast and place in words, in the frame's pixels."""
    facts = region_facts(region.mask, frame, (frame.shape[1], frame.shape[0]))
    return facts_text(facts, mm_per_px)


def _reference_model(references: Sequence[Path]) -> tuple[Any, Any]:
    """A k-shot model from normal images of the product, its threshold calibrated on
    them (what the demo builds), for a person holding images and no model."""
    from engine.scoring.builder import ScoringConfig
    from engine.scoring.kshot_calibration import calibrated_runtime
    from engine.scoring.visual_encoder import VisualEncoder

    config = ScoringConfig(aug_shifts=())  # no shifted copies: small bank, no core-set
    refs = [load_rgb(p) for p in references]
    runtime, calibrated = calibrated_runtime(refs, config,
                                             VisualEncoder(config.backbone, config.stages))
    return runtime, calibrated


def _describer(describer_dir: Path | None, runtime: Any) -> tuple[Any, Any]:
    """(the describer, a function frames -> its input): a product's own when the
    directory holds one, a default describer built elsewhere when it holds a forest,
    else the shipped default describer of generic kinds; (None, None) when there is
    neither."""
    from engine.defects.describer_artifacts import FOREST, load_default_describer, load_describer
    from engine.defects.describer_features import DescriberEncoder, reads_runtime_features
    from engine.errors import ModelArtifactError
    from engine.training.describer_train import make_feature_cache

    def runtime_features(frames: np.ndarray) -> torch.Tensor:
        return frame_patch_embeddings(runtime.encoder, runtime.preprocess,
                                      torch.from_numpy(frames), runtime.pool)

    if describer_dir is not None and (Path(describer_dir) / "describer.pt").is_file():
        own = load_describer(describer_dir)
        if runtime is not None and reads_runtime_features(own, runtime):
            return own, runtime_features
        if "stages" in own.features:  # it records an encoder of its own
            return own, DescriberEncoder(own.features)
        cache = make_feature_cache()
        return own, lambda frames: frame_patch_embeddings(
            cache.encoder, cache.preprocess, torch.from_numpy(frames), cache.pool)
    try:
        given = describer_dir is not None and (Path(describer_dir) / FOREST).is_file()
        default = load_default_describer(describer_dir) if given else load_default_describer()
    except ModelArtifactError:
        return None, None
    if runtime is not None and reads_runtime_features(default, runtime):
        return default, runtime_features
    return default, DescriberEncoder(default.features)


def describe_image(
    image: Path, *, mask: Path | None = None, model: Path | None = None,
    category: str | None = None, describer_dir: Path | None = None,
    threshold: float | None = None, min_area: int = 16, references: Sequence[Path] = (),
    mm_per_px: float | None = None,
) -> tuple[list[str], bytes]:  # fmt: skip
    """(printable lines, overlay PNG). Regions come from `mask` when given (a person
    designates them, as in the paper), else from the map of the model, or of a k-shot
    model built from `references` (normal images of the same product), by the worker's
    rule (engine.defects.regions.verdict_regions): none when the image scores normal, at least
    one when anomalous. `threshold` overrides the region (pixel) threshold. Descriptions
    come from the product's describer if there is one, else the default."""
    from engine.scoring.artifacts import load_model, resolve

    frame = load_rgb(image)
    runtime, version_dir, verdict = None, None, ""
    amap, score, image_threshold = None, 0.0, 0.0
    if model is not None:
        version_dir = resolve(model, category)
        loaded = load_model(version_dir)
        runtime, image_threshold = loaded.runtime, loaded.threshold
        threshold = loaded.pixel_threshold if threshold is None else threshold
    elif references:
        runtime, calibrated = _reference_model(references)
        image_threshold = calibrated.value
        pixel = calibrated.pixel if calibrated.pixel is not None else calibrated.value
        threshold = pixel if threshold is None else threshold
    if runtime is not None:
        with torch.no_grad():
            out = runtime(torch.from_numpy(frame[None]))
        amap, score = out.maps[0].numpy(), float(out.scores[0])
    if mask is not None:
        given = _load_mask(mask, frame.shape[:2])
        regions: list[Region] = extract_regions(given.astype(np.float32), 0.5, min_area)
        amap = given.astype(np.float32) if amap is None else amap
        threshold = 0.5 if threshold is None else threshold
    elif amap is None or threshold is None:
        raise ValueError("nothing says where the defects are: pass --reference GOOD.png "
                         "(one or more normal images of the same product; a k-shot model is "
                         "built from them) or --mask MASK.png (the regions to describe), or "
                         "--model DIR (a trained model)")  # fmt: skip
    else:
        anomalous = score > image_threshold
        regions = verdict_regions(amap, anomalous=anomalous, threshold=threshold,
                                  min_area=min_area)  # fmt: skip
        verdict = (f" {'anomalous' if anomalous else 'normal'} (score {score:.3f}, threshold "
                   f"{image_threshold:.3f}, region threshold {threshold:.3f}),")
    lines = [f"{image.name}:{verdict} {len(regions)} region(s)"]
    labels = [f"{r.index + 1}" for r in regions]
    d, features = _describer(describer_dir or version_dir, runtime) if regions else (None, None)
    if d is not None:
        size = int(d.features.get("input_size") or frame.shape[0])
        small = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)  # as trained
        phrases, _ = d.vocabulary.phrases()
        descs = describe_regions(d.describer, features(small[None]),
                                 np.stack([r.mask for r in regions]), d.vocabulary.keys,
                                 phrases, unclear_below=d.unclear_below,
                                 group_below=d.group_below)  # fmt: skip
        # a region no kind was named for says what its pixels show ("unnamed: ...")
        descs = [replace(x, text=_facts(r, frame, mm_per_px)) if x.kind == UNCLEAR else x
                 for r, x in zip(regions, descs, strict=True)]
        lines.append("  (default describer: generic defect kinds; train one for this product "
                     "with `clad train-describer`)" if d.source == "default"
                     else "  (the product's own describer)")  # fmt: skip
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
                  f" -> {_facts(r, frame, mm_per_px)!r}" + _fallback_note(r)
                  for r in regions]  # fmt: skip
    png = render_overlay(frame, amap, threshold=float(threshold),
                         boxes=[r.bbox for r in regions], masks=[r.mask for r in regions],
                         labels=labels)  # fmt: skip
    return lines, png
