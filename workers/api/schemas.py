"""Response bodies (they are also the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.api.values import DbId, Text, UtcDatetime, json_int

# A mask is never larger than a frame, and frames stop at 32768 px a side.
MAX_MASK_SIDE = 32768
MaskSide = json_int(1, MAX_MASK_SIDE)
RunLength = json_int(0, MAX_MASK_SIDE * MAX_MASK_SIDE)
# engine.defects.kind_names.kind_key's rule, which the API applies (else 422).
KIND_RULE = ("The defect kind in the operator's words, as typed. It must name a kind: "
             "letters or digits past a leading article, and at most 60 characters once "
             "written as a kind key ('Bent lead' -> bent_lead); else 422.")


class DefectOut(BaseModel):
    """What one region shows: the operator's latest description when there is one
    (marked by_operator), else the describer's; the describer's answer stays beside."""

    region_id: int
    kind: str | None = Field(description="The kind key shown (the operator's, else the "
                             "describer's; regions stored before kinds: their text).")
    text: str | None = Field(description="The words shown.")
    by_operator: bool
    operator_by: str | None = None
    describer_kind: str | None = None
    describer_text: str | None = None


class VerdictSummary(BaseModel):
    id: int
    frame_id: uuid.UUID
    camera_id: str
    line_id: str
    product: str
    captured_at: UtcDatetime
    model_version: str
    score: float = Field(description="The raw anomaly score, on the product's own scale.")
    threshold: float
    relative_score: float | None = Field(
        None, description="score / threshold: 1.0 is the threshold on every product, "
                          "2.0 twice it (null where the threshold is not above 0).")
    label: str = Field(description="The model's verdict.")
    operator_label: str | None = Field(
        None, description="The latest 'normal' or 'anomalous' an operator gave (it wins "
                          "over the model's `label`; the earlier ones are in the labels).")
    operator_label_by: str | None = None
    latency_ms: float | None
    defects: list[str] = Field(default_factory=list,
                               description="What the regions show (operator's words first).")
    defect_items: list[DefectOut] = Field(default_factory=list)


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
    kind: str | None = Field(default=None, description="The describer's kind key "
                             "('unclear' when it named none; null before descriptions "
                             "carried kinds).")
    operator_description: str | None = Field(
        default=None, description="The operator's latest description (shown instead of "
                                  "the describer's `description`, which stays).")
    operator_kind: str | None = None
    operator_by: str | None = None


class LabelOut(BaseModel):
    id: int
    verdict_id: int
    region_id: int | None
    label: str
    description: str | None
    kind: str | None = None  # the kind key the description names (folded spellings)
    mask_rle: dict[str, Any] | None
    author: str
    created_at: UtcDatetime


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
    description: Text | None = Field(None, max_length=200, description=KIND_RULE)
    mask_rle: MaskRle | None = None


class RateOut(BaseModel):
    key: str
    total: int
    anomalous: int
    rate: float


class KindOut(BaseModel):
    description: str = Field(description="The kind key (regions stored before kinds: "
                                         "their text).")
    label: str = Field("", description="How the kind reads in a legend.")
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
    description: str = Field(description="The kind key, or 'other' for the kinds past "
                                         "the top ones.")
    label: str = Field("", description="How the kind reads in a legend.")
    verdicts: int


class HistogramOut(BaseModel):
    edges: list[float] = Field(description="Bin edges, one more than the counts.")
    normal: list[int]
    anomalous: list[int]
    threshold: float | None = Field(description="Threshold of the newest verdict.")
    thresholds: list[float] = Field(description="Every threshold in the window.")


class ProductHistogramOut(HistogramOut):
    product: str


class ReviewRegionOut(BaseModel):
    id: int
    index: int
    description: str | None
    confidence: float | None
    kind: str | None = None
    confirmable: str | None = Field(
        None, description="The describer's answer as a description label would say it "
                          "(kind_phrase of its kind): set only when it named one kind, "
                          "so one key can confirm it.")
    similar: int = Field(0, description="Unnamed regions of the product that look alike "
                                        "(GET /regions/{id}/similar lists them).")


class ReviewItemOut(VerdictSummary):
    reason: Literal["near_threshold", "unclear"]
    regions: list[ReviewRegionOut]


class ReviewQueueOut(BaseModel):
    waiting: int = Field(description="Verdicts waiting for review (all, not only this page).")
    per_hour: int = Field(description="Per product and hour: verdicts queued closest to the "
                                      "threshold, and as many with an unclear region.")
    since: datetime
    until: datetime
    items: list[ReviewItemOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class LabelConflictOut(BaseModel):
    id: int
    verdict_id: int
    product: str
    camera_id: str
    captured_at: datetime
    label: str = Field(description="The label that won (the latest).")
    author: str
    previous_label: str = Field(description="The other author's label it overturned.")
    previous_author: str
    created_at: datetime


class LabelConflictsOut(BaseModel):
    open: int = Field(description="Unsettled conflicts (all, not only those listed). A "
                                  "decisive label on the verdict by anyone but the "
                                  "conflict's author settles it.")
    items: list[LabelConflictOut] = Field(description="Newest first.")


class SimilarRegionOut(BaseModel):
    region_id: int
    verdict_id: int
    index: int
    similarity: float = Field(description="Cosine of the describer embeddings (1 = same).")
    captured_at: UtcDatetime
    text: str | None = Field(description="What the region shows now.")
    kind: str | None
    thumbnail: str


class RegionGroupLabelIn(BaseModel):
    region_ids: list[DbId] = Field(min_length=1, max_length=200)
    description: Text = Field(min_length=1, max_length=200, description=KIND_RULE)


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
