"""k-shot evaluation of the runtime model on MVTec-AD-layout folders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from engine.evaluation.line_protocol import (
    DEFAULT_DEFECT_SHARE,
    build_stream,
    score_stream,
    skip_reason,
    spare_frames,
)
from engine.evaluation.metrics import aupro, auroc, f1_max
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import ContextConfig, LineContext, score_and_offer
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import CategorySplit, load_mask, load_rgb, split_category

METRIC_SIZE = 256  # pixel metrics on 256x256 maps/masks, as most MVTec reports do
Progress = Callable[[Iterable], Iterable]
Protocol = Literal["pure", "online", "line"]
PROTOCOLS: tuple[str, ...] = ("pure", "online", "line")


@dataclass
class CategoryResult:
    category: str
    shots: int
    n_references: int
    reference_source: str
    n_evaluated: int
    n_anomalous: int
    image_auroc: float
    pixel_auroc: float
    aupro: float
    f1_max: float
    seconds: float
    # "off" (pure K-shot), "online" (against the earlier test images a line context
    # admitted), "line" (inside a stream of spare normal frames: line_protocol)
    context: str = "off"
    skipped: str | None = None  # why the protocol could not run on this category
    stream_frames: int = 0  # line: frames in the stream (test images + normal frames)
    stream_defect_share: float = float("nan")  # line: defective share after the lead-in

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def score_split(
    rt: CladRuntime, split: CategorySplit, size: int, batch: int = 8,
    progress: Progress = lambda it: it,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Image scores [N] and METRIC_SIZE maps [N, s, s] of the evaluated samples."""
    scores, maps = [], []
    samples = split.evaluated
    for i in progress(range(0, len(samples), batch)):
        imgs = np.stack([load_rgb(s.path, size) for s in samples[i : i + batch]])
        out = rt(torch.from_numpy(imgs))
        scores.append(out.scores.numpy())
        maps.extend(metric_map(m) for m in out.maps.numpy())
    return np.concatenate(scores), np.stack(maps)


def metric_map(anomaly_map: np.ndarray) -> np.ndarray:
    """A runtime map at the size the pixel metrics are computed at."""
    return cv2.resize(anomaly_map, (METRIC_SIZE, METRIC_SIZE), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def score_split_online(
    rt: CladRuntime, split: CategorySplit, size: int, context: ContextConfig,
    batch: int = 8, seed: int = 0, progress: Progress = lambda it: it,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """score_split as a line scores: a seeded shuffled order, in batches, each batch
    against the references and the line context of the frames before it, then each
    frame offered to the context on its reference-only score (the worker's admission).
    The first frames see little or no context; results come back in split order."""
    samples = split.evaluated
    order = np.random.default_rng(seed).permutation(len(samples))
    line: LineContext = LineContext(context)
    scores = np.zeros(len(samples), np.float32)
    maps = np.zeros((len(samples), METRIC_SIZE, METRIC_SIZE), np.float32)
    for t, i in enumerate(progress(range(0, len(order), batch))):
        idx = order[i : i + batch]
        imgs = np.stack([load_rgb(samples[j].path, size) for j in idx])
        # one second per batch: the age limit never binds in an evaluation
        out = score_and_offer(rt, torch.from_numpy(imgs), line, now=float(t))
        for k, j in enumerate(idx):
            scores[j] = out.scores[k]
            maps[j] = metric_map(out.maps[k].numpy())
    return scores, maps


def metrics_for(
    split: CategorySplit, scores: np.ndarray, maps: np.ndarray
) -> dict[str, float]:
    labels = np.array([s.label for s in split.evaluated])
    masks = np.stack([load_mask(s, METRIC_SIZE) for s in split.evaluated])
    has_masks = masks.any()
    return {
        "image_auroc": 100 * auroc(labels, scores),
        "pixel_auroc": 100 * auroc(masks, maps) if has_masks else float("nan"),
        "aupro": 100 * aupro(masks, maps) if has_masks else float("nan"),
        "f1_max": 100 * f1_max(labels, scores),
    }


def evaluate_category(
    cat: Path,
    shots: int,
    config: ScoringConfig,
    encoder: VisualEncoder | None = None,
    model_factory: Callable[[list[np.ndarray]], CladRuntime] | None = None,
    progress: Progress = lambda it: it,
    context: ContextConfig | None = None,
    protocol: Protocol | None = None,
    defect_share: float = DEFAULT_DEFECT_SHARE,
    max_images: int = 0,
) -> CategoryResult:
    """Build from the first `shots` references (or with `model_factory`) and score the rest.

    protocol: "pure" (references only), "online" (score_split_online), "line"
    (line_protocol, at `defect_share`); None = "online" with a `context`, else "pure".
    online and line need `context`. A category the line protocol cannot run on comes
    back with `skipped` set and NaN metrics. `max_images` > 0: a seeded draw of that many
    evaluated images that keeps the defect share (subset_samples)."""
    protocol = protocol or ("pure" if context is None else "online")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol != "pure" and context is None:
        raise ValueError(f"the {protocol} protocol needs a line-context config")
    t0 = time.perf_counter()
    split = split_category(cat, shots)
    split = replace(split, evaluated=subset_samples(split.evaluated, max_images))
    label = {"pure": "off", "online": "online", "line": "line"}[protocol]
    head = dict(category=split.name, shots=shots, n_references=len(split.references),
                reference_source=split.reference_source, n_evaluated=len(split.evaluated),
                n_anomalous=sum(s.label for s in split.evaluated), context=label)  # fmt: skip
    stream = None
    if protocol == "line":
        spare = spare_frames(cat, split)
        reason = skip_reason(spare)
        if reason is not None:
            nan = float("nan")
            return CategoryResult(**head, image_auroc=nan, pixel_auroc=nan, aupro=nan,
                                  f1_max=nan, seconds=time.perf_counter() - t0,
                                  skipped=reason)  # fmt: skip
        stream = build_stream(split, spare, defect_share, lead_in=context.max_frames)
    refs = [load_rgb(p, config.input_size) for p in split.references]
    if model_factory is not None:
        rt = model_factory(refs)
    else:
        rt = build_runtime(refs, config, encoder=encoder)
    extra: dict[str, object] = {}
    if protocol == "pure":
        scores, maps = score_split(rt, split, config.input_size, config.batch_size, progress)
    elif protocol == "online":
        scores, maps = score_split_online(rt, split, config.input_size, context,
                                          config.batch_size, progress=progress)  # fmt: skip
    else:
        scores, maps = score_stream(rt, split, stream, config.input_size, context, metric_map,
                                    config.batch_size, progress)  # fmt: skip
        extra = {"stream_frames": len(stream.frames),
                 "stream_defect_share": stream.defect_share([s.label for s in split.evaluated])}
    m = metrics_for(split, scores, maps)
    return CategoryResult(**head, seconds=time.perf_counter() - t0, **m,
                          **extra)  # fmt: skip


def subset_samples(samples: list, max_images: int, seed: int = 0) -> list:
    """At most `max_images` samples, a seeded draw that keeps the normal/defect shares
    (the context search grows with the images of a category); 0 = all."""
    if not max_images or len(samples) <= max_images:
        return samples
    rng = np.random.default_rng(seed)
    keep: list = []
    for label in (0, 1):
        group = [s for s in samples if s.label == label]
        n = round(max_images * len(group) / len(samples))
        keep += [group[i] for i in sorted(rng.choice(len(group), n, replace=False))]
    return sorted(keep, key=lambda s: str(s.path))


def mean_row(results: list[CategoryResult]) -> dict[str, float]:
    """Means over the categories that were scored (skipped ones left out)."""
    scored = [r for r in results if r.skipped is None]
    keys = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "seconds")
    if not scored:
        return {k: float("nan") for k in keys}
    return {k: float(np.nanmean([getattr(r, k) for r in scored])) for k in keys}
