"""Response bodies (they are also the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.api.values import DbId, Text, json_int

# A mask is never larger than a frame, and frames stop at 32768 px a side.
MAX_MASK_SIDE = 32768
MaskSide = json_int(1, MAX_MASK_SIDE)
RunLength = json_int(0, MAX_MASK_SIDE * MAX_MASK_SIDE)


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


# Request bodies take JSON's types as the document states them: no "5" for 5, no 1 for
# true (lax parsing would accept what the schema calls invalid); 5.0 is an integer.
_BODY = ConfigDict(strict=True)


class MaskRle(BaseModel):
    """COCO uncompressed RLE: column-major runs, starting with background."""

    model_config = _BODY

    # JSON has no tuple: a two-item array (its items still checked as JSON integers).
    size: tuple[MaskSide, MaskSide] = Field(strict=False, description="[height, width] in "
                                                                      "pixels.")
    counts: list[RunLength] = Field(description="Run lengths; they sum to height * width.")


class LabelIn(BaseModel):
    model_config = _BODY

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


class SeriesPointOut(BaseModel):
    bucket: datetime = Field(description="Start of the time bucket (UTC).")
    key: str = Field(description="Line, camera or product id.")
    total: int
    anomalous: int
    rate: float


class KindPointOut(BaseModel):
    bucket: datetime
    description: str
    verdicts: int


class HistogramOut(BaseModel):
    edges: list[float] = Field(description="Bin edges, one more than the counts.")
    normal: list[int]
    anomalous: list[int]
    threshold: float | None = Field(description="Threshold of the newest verdict.")
    thresholds: list[float] = Field(description="Every threshold in the window.")


class ReviewRegionOut(BaseModel):
    id: int
    index: int
    description: str | None
    confidence: float | None


class ReviewItemOut(VerdictSummary):
    reason: Literal["near_threshold", "unclear"]
    regions: list[ReviewRegionOut]


class ReviewQueueOut(BaseModel):
    waiting: int = Field(description="Verdicts waiting for review (all, not only this page).")
    fraction: float = Field(description="Share of each product's verdicts in its band.")
    bands: dict[str, float] = Field(description="Per product: the band's half-width, "
                                                "in score units around the threshold.")
    since: datetime
    until: datetime
    items: list[ReviewItemOut] = Field(description="Oldest first.")


Rate = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False,
                              description="Alarm when the defect rate is above this "
                                          "fraction (0.2 = 20 %).")]
WindowMinutes = json_int(1, 7 * 24 * 60)
MinVerdicts = json_int(1, 1_000_000)


class AlarmRuleIn(BaseModel):
    model_config = _BODY

    name: Text = Field(min_length=1, max_length=100)
    scope: Literal["line", "camera"]
    target: Text = Field(min_length=1, max_length=64, description="Line or camera id.")
    max_rate: Rate
    window_minutes: WindowMinutes
    min_verdicts: MinVerdicts = 1
    enabled: bool = True


class AlarmRulePatch(BaseModel):
    model_config = _BODY

    max_rate: Rate | None = None
    window_minutes: WindowMinutes | None = None
    min_verdicts: MinVerdicts | None = None
    enabled: bool | None = None


class AlarmRuleOut(BaseModel):
    id: int
    name: str
    scope: str
    target: str
    max_rate: float
    window_minutes: int
    min_verdicts: int
    enabled: bool
    created_by: str
    created_at: datetime


class AlarmOut(BaseModel):
    id: int
    rule_id: int
    rule: str
    scope: str
    target: str
    max_rate: float
    window_minutes: int
    raised_at: datetime
    window_start: datetime
    window_end: datetime
    total: int
    anomalous: int
    rate: float
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    published_at: datetime | None


class ErrorInfo(BaseModel):
    status: int
    code: str = Field(description="Stable machine-readable code, e.g. not_found, conflict.")
    message: str
    details: list[dict[str, Any]] = Field(description="Per parameter for a 422: loc, msg "
                                                      "and (query/path only) input.")


class ErrorOut(BaseModel):
    """Every error response, whatever went wrong (workers.api.errors)."""

    error: ErrorInfo
