"""Decoded frames of one product -> verdict records (score, label, heatmap, regions)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime

import cv2
import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.frames import FrameRejectedError, RejectReason
from pipeline.heatmap_codec import encode_heatmap
from pipeline.storage.records import HeatmapRecord, VerdictRecord
from workers.streaming.decode import DecodedFrame
from workers.streaming.isolation import guarded
from workers.streaming.regions import find_regions
from workers.streaming.scoring import ScoringEngine, region_threshold_of

log = logging.getLogger(__name__)


# Heatmaps and region masks are kept at most this long on their long side. The map
# is a stride-16 feature grid (20 cells across at 320 px) smoothed with sigma 4 px at
# 320 px: at 160 px that is sigma 2 samples, whose spectrum is ~0 at Nyquist, so
# nothing is lost, while PNG encoding, region extraction and storage scale with the
# pixel count (256 px: ~89 KB and ~2.1 ms per frame; 160 px: ~2.6x less of both).
MAP_LONG_SIDE = 160


def map_size(width: int, height: int, long_side: int = MAP_LONG_SIDE) -> tuple[int, int]:
    """(w, h) of the stored map: the frame's own size, shrunk to `long_side` if larger."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_verdict(record: ConsumerRecord, frame: DecodedFrame, score: float,
               small_map: np.ndarray, engine: ScoringEngine, min_area: int) -> VerdictRecord:
    """Map resized to the frame's aspect at a bounded size (recorded in the heatmap);
    region boxes and areas are scaled back to frame pixels, masks keep map size."""
    h = frame.envelope.header
    mw, mh = map_size(h.width, h.height)
    amap = cv2.resize(small_map.astype(np.float32), (mw, mh), interpolation=cv2.INTER_LINEAR)
    png, max_value = encode_heatmap(amap)
    sx, sy = h.width / mw, h.height / mh
    anomalous = score > engine.threshold
    # Defect regions belong to anomalous verdicts only (on a normal frame they would be
    # noise an operator has to dismiss), and an anomalous one always gets at least one.
    regions = [dataclasses.replace(
        r, bbox=(int(r.bbox[0] * sx), int(r.bbox[1] * sy), max(1, round(r.bbox[2] * sx)),
                 max(1, round(r.bbox[3] * sy))), area=max(1, round(r.area * sx * sy)))
        for r in find_regions(amap, anomalous=anomalous, threshold=region_threshold_of(engine),
                              min_area=max(1, round(min_area / (sx * sy))))]
    latency_ms = (datetime.now(UTC) - h.captured_at).total_seconds() * 1000.0
    return VerdictRecord(
        frame_id=h.frame_id, camera_id=h.camera_id, line_id=h.line_id, product=h.product,
        captured_at=h.captured_at, width=h.width, height=h.height,
        content_type=h.content_type, model_version=engine.version, score=float(score),
        threshold=engine.threshold,
        label="anomalous" if anomalous else "normal",
        latency_ms=latency_ms, kafka_topic=record.topic, kafka_partition=record.partition,
        kafka_offset=record.offset,
        heatmap=HeatmapRecord(png=png, width=mw, height=mh, max_value=max_value),
        regions=tuple(regions))


Scored = tuple[ConsumerRecord, DecodedFrame, float, np.ndarray]  # record, frame, score, map


def infer_product(engine: ScoringEngine, items: Sequence[tuple[ConsumerRecord, DecodedFrame]],
                  *, chunk: int
                  ) -> tuple[list[Scored], list[tuple[ConsumerRecord, FrameRejectedError]]]:
    """Infer in chunks of at most `chunk` frames. A chunk whose inference raises is
    retried frame by frame, so one poisonous frame goes to the DLQ instead of
    failing (and crash-looping) the whole batch."""
    outputs: list[Scored] = []
    failed: list[tuple[ConsumerRecord, FrameRejectedError]] = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        try:
            scores, maps = engine.infer(np.stack([f.model_input for _r, f in part]))
            outputs.extend((r, f, scores[i], maps[i]) for i, (r, f) in enumerate(part))
        except Exception:  # noqa: BLE001 - isolate the frame that breaks the engine
            log.exception("inference failed on a chunk of %s frames; retrying one by one",
                          len(part))
            for r, f in part:
                try:
                    s, m = engine.infer(f.model_input[None])
                    outputs.append((r, f, s[0], m[0]))
                except Exception as exc:  # noqa: BLE001
                    failed.append((r, FrameRejectedError(RejectReason.INFERENCE_FAILED,
                                                         f"{type(exc).__name__}: {exc}")))
    return outputs, failed


def to_verdicts(engine: ScoringEngine, outputs: Sequence[Scored], *, min_area: int,
                pool: Executor | None = None) -> list[VerdictRecord]:
    """Heatmap PNG + regions per frame, in the pool when given (OpenCV releases the GIL)."""
    if pool is None:
        return [to_verdict(r, f, s, m, engine, min_area) for r, f, s, m in outputs]
    return list(pool.map(lambda o: to_verdict(*o, engine, min_area), outputs))


def to_verdicts_isolated(engine: ScoringEngine, outputs: Sequence[Scored], *, min_area: int,
                         pool: Executor | None = None
                         ) -> tuple[list[VerdictRecord],
                                    list[tuple[ConsumerRecord, FrameRejectedError]]]:
    """to_verdicts, with a frame whose heatmap or regions raise rejected (internal_error)
    instead of failing the batch."""
    def one(output: Scored) -> VerdictRecord | FrameRejectedError:
        return guarded(lambda: to_verdict(*output, engine, min_area), what="heatmap")

    results = list(pool.map(one, outputs)) if pool is not None else [one(o) for o in outputs]
    verdicts = [v for v in results if isinstance(v, VerdictRecord)]
    failed = [(o[0], v) for o, v in zip(outputs, results, strict=True)
              if isinstance(v, FrameRejectedError)]
    return verdicts, failed
