"""Per-product decision thresholds, stored with the model (thresholds.json).

Two rules, picked by what the validation data holds:
- labelled anomalies present: the threshold that maximises F1 on the validation split;
- normal frames only (the usual case on a new line): the (1 - target) quantile of the
  normal scores, so about `target` of good parts raise a false alarm.
"""

from __future__ import annotations

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


def calibrate(
    scores: np.ndarray, labels: np.ndarray | None = None, target_far: float = 0.01
) -> Threshold:
    """Threshold for one product; labels (1 = anomalous) switch to max-F1 when any is 1."""
    scores = np.asarray(scores, np.float64)
    labels = np.zeros(scores.shape, int) if labels is None else np.asarray(labels).astype(int)
    n_anom = int(labels.sum())
    normals = scores[labels == 0]
    if n_anom > 0 and normals.size > 0:
        value, f1 = max_f1_threshold(scores, labels)
        far = float((normals >= value).mean())
        return Threshold(value, "max_f1", int(normals.size), n_anom, f1=f1, false_alarm_rate=far)
    value = far_threshold(normals, target_far)
    far = float((normals >= value).mean())
    return Threshold(value, "false_alarm_rate", int(normals.size), 0, false_alarm_rate=far)
