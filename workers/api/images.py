"""Pictures for people: the frame with its heatmap and region outlines, and region masks."""

from __future__ import annotations

import cv2
import numpy as np

from engine.defects import rle
from pipeline.heatmap_codec import decode_heatmap, render_overlay
from pipeline.storage.models import Verdict


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
    masks = [_fit(rle.decode(r.mask_rle), h, w) for r in verdict.regions]
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
        out[_fit(rle.decode(region.mask_rle), height, width)] = value
    ok, buf = cv2.imencode(".png", out)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the mask")
    return buf.tobytes()


def shrink_png(png: bytes, max_side: int) -> bytes:
    """The picture scaled down so its longer side is at most `max_side` (thumbnails)."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise RuntimeError("OpenCV failed to decode its own PNG")
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the thumbnail")
    return buf.tobytes()
