"""Anomaly-detection metrics as in the MVTec AD paper: AUROC and F1 via scikit-learn, AUPRO here."""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.all() or not y.any():  # scikit-learn raises here; a category may lack one class
        return float("nan")
    return float(roc_auc_score(y, s))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds `score >= t`; NaN without positives."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def aupro(
    masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, n_thresholds: int = 1000
) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit`.

    masks: [N, H, W] binary ground truth; maps: [N, H, W] anomaly scores. Each
    connected defect region counts once (PRO = mean over regions of the fraction of
    the region above the threshold); FPR is over all normal pixels. The curve is
    integrated over FPR in [0, fpr_limit] and divided by fpr_limit (MVTec AD).
    """
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    regions = np.zeros(masks.shape, np.int64)
    n_regions = 0
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += n - 1
    if n_regions == 0 or masks.all():
        return float("nan")
    lo, hi = maps.min(), maps.max()
    edges = np.linspace(lo, hi, n_thresholds + 1)[1:-1]
    bins = np.searchsorted(edges, maps.ravel(), side="right")  # 0..n_thresholds-1
    nb = n_thresholds
    # count of pixels with score in bin >= b, for normal pixels and per region
    normal = np.bincount(bins[~masks.ravel()], minlength=nb)[::-1].cumsum()[::-1]
    fpr = normal / max(int((~masks).sum()), 1)
    reg = regions.ravel()
    sel = reg > 0
    per_region = np.bincount((reg[sel] - 1) * nb + bins[sel], minlength=n_regions * nb)
    per_region = per_region.reshape(n_regions, nb)[:, ::-1].cumsum(axis=1)[:, ::-1]
    pro = (per_region / per_region[:, :1]).mean(axis=0)
    # thresholds ascending -> fpr descending; integrate from fpr 0 upward
    fpr, pro = np.r_[fpr[::-1], 1.0], np.r_[pro[::-1], 1.0]
    fpr, pro = np.r_[0.0, fpr], np.r_[0.0, pro]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    idx = int(keep.sum())
    if idx < len(fpr) and fpr[idx] > x[-1]:  # interpolate the point at exactly fpr_limit
        t = (fpr_limit - x[-1]) / (fpr[idx] - x[-1])
        x = np.r_[x, fpr_limit]
        y = np.r_[y, y[-1] + t * (pro[idx] - y[-1])]
    return float(np.trapezoid(y, x) / fpr_limit)
