"""Scores a person can read: the raw score over its product's threshold.

Raw anomaly scores are unbounded and on a scale of their own per product (0.5 on
one, 28 on another). Divided by the threshold the verdict was decided with, 1.0 is
the threshold on every product, 2.0 twice it; the raw score is always kept beside.
"""

from __future__ import annotations


def relative_score(score: float, threshold: float) -> float | None:
    """score / threshold; None where the threshold is not above 0 (no scale to read)."""
    if not threshold > 0:
        return None
    return score / threshold


def format_relative(score: float, threshold: float) -> str:
    """"1.23x" (of the threshold), or "-" where there is no scale."""
    value = relative_score(score, threshold)
    return "-" if value is None else f"{value:.2f}x"
