"""Binary masks as uncompressed COCO-style run-length encodings.

Format: {"size": [h, w], "counts": [n0, n1, n2, ...]} — run lengths over the mask
flattened in COLUMN-MAJOR (Fortran) order, starting with a run of zeros (possibly
0 long), exactly like pycocotools' uncompressed RLE, so a stored region can be
handed to COCO tooling (`pycocotools.mask.frPyObjects`) without conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Boolean/0-1 mask [H, W] -> {"size": [H, W], "counts": [...]} (column-major)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(h), int(w)], "counts": []}
    # indices where the value changes, plus both ends; the first run counts zeros
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode`: bool mask [H, W]."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w}")
    values = np.arange(counts.size) % 2 == 1  # runs alternate zeros, ones, zeros, ...
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels without decoding."""
    return int(sum(rle["counts"][1::2]))
