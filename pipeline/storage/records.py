"""Plain records the worker hands to storage: one verdict with its heatmap and regions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RegionRecord:
    index: int
    mask_rle: dict[str, Any]
    bbox: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    area: int
    peak_score: float
    mean_score: float
    description: str | None = None
    confidence: float | None = None
    runner_up: str | None = None
    runner_up_confidence: float | None = None
    # no pixel passed the region threshold: the hottest area around the map's maximum,
    # low confidence (engine.defects.regions.verdict_regions)
    fallback: bool = False
    kind: str | None = None  # the describer's kind key ("unclear" when it named none)
    describer: str | None = None  # identity of the describer that answered
    embedding: bytes | None = None  # the region's embedding in that describer's space, float32


@dataclass(frozen=True)
class HeatmapRecord:
    png: bytes
    width: int
    height: int
    max_value: float
    encoding: str = "png16"


@dataclass(frozen=True)
class VerdictRecord:
    frame_id: uuid.UUID
    camera_id: str
    line_id: str
    product: str
    captured_at: datetime
    width: int
    height: int
    content_type: str
    model_version: str
    score: float
    threshold: float
    label: str
    latency_ms: float | None = None
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    heatmap: HeatmapRecord | None = None
    regions: tuple[RegionRecord, ...] = field(default_factory=tuple)
