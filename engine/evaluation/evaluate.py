"""k-shot evaluation of the runtime model on MVTec-AD-layout folders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.evaluation.metrics import aupro, auroc, f1_max
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import ContextConfig, LineContext, score_and_offer
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import CategorySplit, load_mask, load_rgb, split_category

METRIC_SIZE = 256  # pixel metrics on 256x256 maps/masks, as most MVTec reports do
Progress = Callable[[Iterable], Iterable]


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
    context: str = "off"  # "online": scored as the worker does, against earlier frames

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
) -> CategoryResult:
    """Build from the first `shots` references (or with `model_factory`) and score the rest;
    with `context`, as a line does (score_split_online)."""
    t0 = time.perf_counter()
    split = split_category(cat, shots)
    refs = [load_rgb(p, config.input_size) for p in split.references]
    if model_factory is not None:
        rt = model_factory(refs)
    else:
        rt = build_runtime(refs, config, encoder=encoder)
    if context is None:
        scores, maps = score_split(rt, split, config.input_size, config.batch_size, progress)
    else:
        scores, maps = score_split_online(rt, split, config.input_size, context,
                                          config.batch_size, progress=progress)
    m = metrics_for(split, scores, maps)
    return CategoryResult(
        category=split.name, shots=shots, n_references=len(refs),
        reference_source=split.reference_source, n_evaluated=len(split.evaluated),
        n_anomalous=sum(s.label for s in split.evaluated), seconds=time.perf_counter() - t0,
        context="off" if context is None else "online", **m,
    )  # fmt: skip


def mean_row(results: list[CategoryResult]) -> dict[str, float]:
    keys = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "seconds")
    return {k: float(np.nanmean([getattr(r, k) for r in results])) for k in keys}
