"""Decoded frames of one product -> verdict records (score, label, heatmap, regions)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import cv2
import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.frames import FrameRejectedError, RejectReason
from pipeline.heatmap_codec import encode_heatmap
from pipeline.storage.records import HeatmapRecord, VerdictRecord
from workers.decode import DecodedFrame
from workers.regions import find_regions
from workers.scoring import ScoringEngine

log = logging.getLogger(__name__)


def to_verdict(record: ConsumerRecord, frame: DecodedFrame, score: float,
               small_map: np.ndarray, engine: ScoringEngine, min_area: int) -> VerdictRecord:
    """Upsample the map to the frame's own size so heatmap and regions are in its pixels."""
    h = frame.envelope.header
    full = cv2.resize(small_map.astype(np.float32), (h.width, h.height),
                      interpolation=cv2.INTER_LINEAR)
    png, max_value = encode_heatmap(full)
    regions = find_regions(full, engine.threshold, min_area)
    latency_ms = (datetime.now(UTC) - h.captured_at).total_seconds() * 1000.0
    return VerdictRecord(
        frame_id=h.frame_id, camera_id=h.camera_id, line_id=h.line_id, product=h.product,
        captured_at=h.captured_at, width=h.width, height=h.height,
        content_type=h.content_type, model_version=engine.version, score=float(score),
        threshold=engine.threshold,
        label="anomalous" if score > engine.threshold else "normal",
        latency_ms=latency_ms, kafka_topic=record.topic, kafka_partition=record.partition,
        kafka_offset=record.offset,
        heatmap=HeatmapRecord(png=png, width=h.width, height=h.height, max_value=max_value),
        regions=tuple(regions))


def score_product(engine: ScoringEngine, items: Sequence[tuple[ConsumerRecord, DecodedFrame]],
                  *, chunk: int, min_area: int
                  ) -> tuple[list[VerdictRecord], list[tuple[ConsumerRecord, FrameRejectedError]]]:
    """Infer in chunks of at most `chunk` frames. A chunk whose inference raises is
    retried frame by frame, so one poisonous frame goes to the DLQ instead of
    failing (and crash-looping) the whole batch."""
    verdicts: list[VerdictRecord] = []
    failed: list[tuple[ConsumerRecord, FrameRejectedError]] = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        try:
            scores, maps = engine.infer(np.stack([f.model_input for _r, f in part]))
            outputs = [(r, f, scores[i], maps[i]) for i, (r, f) in enumerate(part)]
        except Exception:  # noqa: BLE001 - isolate the frame that breaks the engine
            log.exception("inference failed on a chunk of %s frames; retrying one by one",
                          len(part))
            outputs = []
            for r, f in part:
                try:
                    s, m = engine.infer(f.model_input[None])
                    outputs.append((r, f, s[0], m[0]))
                except Exception as exc:  # noqa: BLE001
                    failed.append((r, FrameRejectedError(RejectReason.INFERENCE_FAILED,
                                                         f"{type(exc).__name__}: {exc}")))
        verdicts.extend(to_verdict(r, f, s, m, engine, min_area) for r, f, s, m in outputs)
    return verdicts, failed
