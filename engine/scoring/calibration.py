"""Per-product decision thresholds, stored with the model (thresholds.json).

Two rules, picked by what the validation data holds:
- labelled anomalies present: the threshold that maximises F1 on the validation split;
- normal frames only (the usual case on a new line): the (1 - target) quantile of the
  normal scores, so about `target` of good parts raise a false alarm.

The region (pixel) threshold that cuts defect regions out of the anomaly map comes
from the same normal frames, by the false-alarm rule on each normal map's peak: at
most `target` of good parts would show any pixel above it. The image and the region
threshold then share one meaning, "hotter than normal parts get", instead of the
image threshold being reused on a map whose scale it was never fitted to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Method = Literal["max_f1", "false_alarm_rate"]


@dataclass(frozen=True)
class Threshold:
    value: float
    method: Method
    n_normal: int
    n_anomalous: int
    f1: float | None = None  # validation F1 at the threshold (max_f1)
    false_alarm_rate: float | None = None  # on the validation normals at the threshold
    # region threshold on the pixel map, from the same normals; None in artefacts saved
    # before it existed (engine.scoring.artifacts derives one and logs it)
    pixel: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Threshold:
        return cls(**data)  # type: ignore[arg-type]


def max_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 for the rule `anomalous iff score >= threshold`."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # only the last index of a run of tied scores is a realisable cut
    last = np.r_[s[1:] != s[:-1], True]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(y.sum()), 1)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0.0
    )
    f1 = np.where(last, f1, -1.0)
    best = int(np.argmax(f1))
    return float(s[best]), float(f1[best])


def far_threshold(normal_scores: np.ndarray, target: float = 0.01) -> float:
    """Threshold such that at most `target` of the normal scores are >= it (flagged).

    It sits just above the highest normal score that must pass, so a frame identical to
    that reference does not trip the alarm; with few normals that is the maximum.
    """
    s = np.sort(np.asarray(normal_scores, np.float64))
    if s.size == 0:
        raise ValueError("need at least one normal score to calibrate")
    allowed = int(np.floor(target * s.size))  # normals allowed at or above the threshold
    return float(np.nextafter(s[s.size - 1 - allowed], np.inf))


def pixel_threshold(normal_maps: Iterable[np.ndarray], target: float = 0.01) -> float:
    """Region threshold: at most `target` of the normal maps have a pixel at or above it."""
    peaks = np.array([float(np.nanmax(m)) for m in normal_maps], np.float64)
    if peaks.size == 0:
        raise ValueError("need at least one normal map to calibrate the region threshold")
    return far_threshold(peaks, target)


def calibrate(
    scores: np.ndarray, labels: np.ndarray | None = None, target_far: float = 0.01,
    normal_maps: Iterable[np.ndarray] | None = None,
) -> Threshold:  # fmt: skip
    """Threshold for one product; labels (1 = anomalous) switch to max-F1 when any is 1.

    `normal_maps`: pixel maps of normal frames (those scored, or views of them), for
    the region threshold; without them `pixel` stays None.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.zeros(scores.shape, int) if labels is None else np.asarray(labels).astype(int)
    n_anom = int(labels.sum())
    normals = scores[labels == 0]
    pixel = None if normal_maps is None else pixel_threshold(normal_maps, target_far)
    if n_anom > 0 and normals.size > 0:
        value, f1 = max_f1_threshold(scores, labels)
        far = float((normals >= value).mean())
        return Threshold(value, "max_f1", int(normals.size), n_anom, f1=f1,
                         false_alarm_rate=far, pixel=pixel)  # fmt: skip
    value = far_threshold(normals, target_far)
    far = float((normals >= value).mean())
    return Threshold(value, "false_alarm_rate", int(normals.size), 0, false_alarm_rate=far,
                     pixel=pixel)  # fmt: skip
