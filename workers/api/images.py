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


def decode_frame(data: bytes | None, height: int, width: int, reduce: int = 1) -> np.ndarray:
    """RGB frame; a neutral grey canvas when the bytes were not kept or are unreadable.
    `reduce` (2, 4 or 8) decodes at that fraction of the size (JPEG: much faster)."""
    flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}.get(reduce, cv2.IMREAD_COLOR)
    if data:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if bgr is not None:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.full((max(height // reduce, 1), max(width // reduce, 1), 3), 96, np.uint8)


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
    labels = [f"{r.index + 1}: {text}" if (text := r.operator_description or r.description)
              else str(r.index + 1) for r in verdict.regions]
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


def _reduction(height: int, width: int, max_side: int) -> int:
    """The largest decode reduction that still leaves twice the thumbnail's pixels."""
    return next((f for f in (8, 4, 2) if max(height, width) // f >= 2 * max_side), 1)


def _scaled(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


def thumbnail_png(verdict: Verdict, frame_bytes: bytes | None, height: int, width: int,
                  max_side: int) -> bytes:
    """The overlay at thumbnail size, rendered small from the start (a reduced decode,
    the map and masks resized down): no full-size render to shrink afterwards. Region
    outlines without words, which could not be read at this size anyway."""
    frame = _scaled(decode_frame(frame_bytes, height, width,
                                 _reduction(height, width, max_side)), max_side)
    h, w = frame.shape[:2]
    heat = verdict.heatmap
    anomaly_map = (cv2.resize(decode_heatmap(heat.data, heat.max_value), (w, h),
                              interpolation=cv2.INTER_AREA)
                   if heat is not None else np.zeros((h, w), np.float32))
    masks = [_fit(rle.decode(r.mask_rle), h, w) for r in verdict.regions]
    return render_overlay(frame, anomaly_map, threshold=verdict.threshold, masks=masks)


def region_png(verdict: Verdict, region_index: int, frame_bytes: bytes | None, height: int,
               width: int, max_side: int) -> bytes:
    """One region, cut out of the frame with some of its surroundings and outlined: what
    an operator compares when naming a group of alike regions."""
    region = next(r for r in verdict.regions if r.index == region_index)
    frame = decode_frame(frame_bytes, height, width)
    fh, fw = frame.shape[:2]
    sx, sy = fw / max(width, 1), fh / max(height, 1)
    side = max(region.bbox_w * sx, region.bbox_h * sy) * 1.6 + 16
    cx = (region.bbox_x + region.bbox_w / 2) * sx
    cy = (region.bbox_y + region.bbox_h / 2) * sy
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(fw, int(cx + side / 2) + 1), min(fh, int(cy + side / 2) + 1)
    mask = _fit(rle.decode(region.mask_rle), fh, fw)[y0:y1, x0:x1].astype(np.uint8)
    crop = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2BGR)
    scale = max_side / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else
                      cv2.INTER_LINEAR)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(crop, contours, -1, (0, 255, 255), 1)
    ok, buf = cv2.imencode(".png", crop)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the region")
    return buf.tobytes()
