"""Pictures for people: the frame with its heatmap and region outlines, and region masks."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.heatmap_codec import decode_heatmap, render_overlay
from pipeline.storage.models import Verdict


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool [H, W] -> COCO uncompressed RLE, the format regions and labels are stored in."""
    flat = mask.astype(bool).flatten(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]  # runs always start with background
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO uncompressed RLE (column-major runs, background first) -> bool [H, W]."""
    height, width = (int(v) for v in rle["size"])
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for run in rle["counts"]:
        if value:
            flat[pos:pos + int(run)] = True
        pos += int(run)
        value = not value
    return flat.reshape((width, height)).T


def _fit(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST).astype(bool)


def decode_frame(data: bytes | None, height: int, width: int) -> np.ndarray:
    """RGB frame; a neutral grey canvas when the bytes were not kept or are unreadable."""
    if data:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.full((max(height, 1), max(width, 1), 3), 96, np.uint8)


def overlay_png(verdict: Verdict, frame_bytes: bytes | None, height: int, width: int) -> bytes:
    frame = decode_frame(frame_bytes, height, width)
    h, w = frame.shape[:2]
    heat = verdict.heatmap
    if heat is not None:
        anomaly_map = decode_heatmap(heat.data, heat.max_value)
    else:
        anomaly_map = np.zeros((h, w), np.float32)
    masks = [_fit(rle_to_mask(r.mask_rle), h, w) for r in verdict.regions]
    boxes = [(r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h) for r in verdict.regions]
    labels = [f"{r.index + 1}: {r.description}" if r.description else str(r.index + 1)
              for r in verdict.regions]
    return render_overlay(frame, anomaly_map, threshold=verdict.threshold, boxes=boxes,
                          masks=masks, labels=labels)


def masks_png(verdict: Verdict, height: int, width: int, region_index: int | None) -> bytes:
    """8-bit PNG: pixel = region index + 1 (0 background), or 0/255 for one region."""
    out = np.zeros((height, width), np.uint8)
    for region in verdict.regions:
        if region_index is not None and region.index != region_index:
            continue
        value = 255 if region_index is not None else min(region.index + 1, 255)
        out[_fit(rle_to_mask(region.mask_rle), height, width)] = value
    ok, buf = cv2.imencode(".png", out)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the mask")
    return buf.tobytes()
