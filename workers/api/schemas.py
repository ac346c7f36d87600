"""Response bodies (they are also the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt

from workers.api.values import DbId, Text

# A mask is never larger than a frame, and frames stop at 32768 px a side.
MAX_MASK_SIDE = 32768
MaskSide = Annotated[StrictInt, Field(ge=1, le=MAX_MASK_SIDE)]
RunLength = Annotated[StrictInt, Field(ge=0, le=MAX_MASK_SIDE * MAX_MASK_SIDE)]


class VerdictSummary(BaseModel):
    id: int
    frame_id: uuid.UUID
    camera_id: str
    line_id: str
    product: str
    captured_at: datetime
    model_version: str
    score: float
    threshold: float
    label: str
    latency_ms: float | None
    defects: list[str] = Field(default_factory=list, description="Region descriptions.")


class VerdictPage(BaseModel):
    items: list[VerdictSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class RegionOut(BaseModel):
    id: int
    index: int
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height in pixels.")
    area: int
    peak_score: float
    mean_score: float
    description: str | None
    confidence: float | None
    runner_up: str | None
    runner_up_confidence: float | None
    fallback: bool = Field(description="True: no pixel passed the region threshold; this is "
                           "the hottest area around the map's maximum (low confidence).")


class LabelOut(BaseModel):
    id: int
    verdict_id: int
    region_id: int | None
    label: str
    description: str | None
    mask_rle: dict[str, Any] | None
    author: str
    created_at: datetime


class VerdictDetail(VerdictSummary):
    width: int
    height: int
    heatmap_max: float | None
    regions: list[RegionOut]
    labels: list[LabelOut]
    links: dict[str, str]


class MaskRle(BaseModel):
    """COCO uncompressed RLE: column-major runs, starting with background."""

    size: tuple[MaskSide, MaskSide] = Field(description="[height, width] in pixels.")
    counts: list[RunLength] = Field(description="Run lengths; they sum to height * width.")


class LabelIn(BaseModel):
    label: Literal["anomalous", "normal", "description", "missing_region"]
    region_id: DbId | None = None
    description: Text | None = Field(None, max_length=200)
    mask_rle: MaskRle | None = None


class RateOut(BaseModel):
    key: str
    total: int
    anomalous: int
    rate: float


class KindOut(BaseModel):
    description: str
    verdicts: int
    regions: int
    rate: float


class KindTrendOut(BaseModel):
    description: str
    current: int
    previous: int
    change: int


class TrendOut(BaseModel):
    since: datetime
    until: datetime
    current: RateOut
    previous: RateOut
    rate_change: float
    kinds: list[KindTrendOut]


class ModelVersionOut(BaseModel):
    version: str
    product: str
    status: str
    threshold: float | None
    metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None
