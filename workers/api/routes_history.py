"""Read routes (viewer and up): history, one verdict, its pictures, live feed, aggregates."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from pipeline.relative_score import relative_score
from pipeline.storage import history, trends
from pipeline.storage.frame_store import load_frame
from pipeline.storage.labels import labels_for
from pipeline.storage.models import Camera, Frame, Region, Verdict
from workers.api.auth import SessionDep, require
from workers.api.errors import ApiError
from workers.api.kinds import kind_label
from workers.api.openapi import errors
from workers.api.params import CursorDep, FilterDep, LimitDep, VerdictId, encode_cursor
from workers.api.schemas import (
    DefectOut,
    HistogramOut,
    KindOut,
    KindPointOut,
    LabelOut,
    ProductHistogramOut,
    RateOut,
    RegionOut,
    SeriesPointOut,
    TrendOut,
    VerdictDetail,
    VerdictPage,
    VerdictSummary,
)

router = APIRouter(prefix="/api/v1", tags=["history"], dependencies=[Depends(require("viewer"))])
PNG = {200: {"content": {"image/png": {}}, "description": "PNG image"}, **errors(404)}


def defect_items(session: Session, verdict_ids: list[int]) -> dict[int, list[DefectOut]]:
    """Per verdict, what each region shows (operator's word first), in region order."""
    items: dict[int, list[DefectOut]] = defaultdict(list)
    if not verdict_ids:
        return items
    rows = session.execute(select(
        Region.verdict_id, Region.id, Region.kind, Region.description,
        Region.operator_description, Region.operator_kind, Region.operator_by)
        .where(Region.verdict_id.in_(verdict_ids)).order_by(Region.verdict_id, Region.index))
    for verdict_id, region_id, kind, text, op_text, op_kind, op_by in rows:
        by_operator = op_text is not None
        items[verdict_id].append(DefectOut(
            region_id=region_id, by_operator=by_operator, operator_by=op_by,
            kind=(op_kind or op_text) if by_operator else (kind or text),
            text=op_text if by_operator else text, describer_kind=kind, describer_text=text))
    return items


def summaries(session: Session, verdicts: list[Verdict]) -> list[VerdictSummary]:
    """Verdict rows with what their regions show, fetched in one query for the whole page."""
    items = defect_items(session, [v.id for v in verdicts])
    out = []
    for v in verdicts:
        shown = items[v.id]
        texts = list(dict.fromkeys(d.text for d in shown if d.text))
        out.append(VerdictSummary.model_validate(v, from_attributes=True).model_copy(update={
            "defects": texts, "defect_items": shown,
            "relative_score": relative_score(v.score, v.threshold)}))
    return out


@router.get("/verdicts", response_model=VerdictPage, summary="Filtered history, newest first")
def list_verdicts(f: FilterDep,
                  after: CursorDep, limit: LimitDep,
                  session: SessionDep) -> VerdictPage:
    page = history.list_verdicts(session, f, limit=limit, after=after)
    return VerdictPage(items=summaries(session, page.items),
                       next_cursor=encode_cursor(page.next_cursor))


@router.get("/verdicts.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "CSV"}},
            summary="Filtered history as CSV, newest first (as `clad history -o csv`)")
def list_verdicts_csv(f: FilterDep, session: SessionDep,
                      limit: Annotated[int, Query(ge=1, le=history.MAX_PAGE)] = 50) -> Response:
    from workers.api.history_export import history_csv

    page = history.list_verdicts(session, f, limit=limit)
    body = history_csv(s.model_dump(mode="json") for s in summaries(session, page.items))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="history.csv"'})


def load_verdict(session: Session, verdict_id: int) -> tuple[Verdict, int, int]:
    verdict = session.get(Verdict, verdict_id, options=[selectinload(Verdict.regions),
                                                        selectinload(Verdict.heatmap)])
    if verdict is None:
        raise ApiError(404, f"verdict {verdict_id} not found")
    width, height = session.execute(select(Frame.width, Frame.height).where(
        Frame.id == verdict.frame_id)).one()
    return verdict, int(height), int(width)


def verdict_detail(session: Session, verdict_id: int) -> VerdictDetail:
    verdict, height, width = load_verdict(session, verdict_id)
    base = f"/api/v1/verdicts/{verdict.id}"
    return VerdictDetail(
        **summaries(session, [verdict])[0].model_dump(), width=width, height=height,
        heatmap_max=verdict.heatmap.max_value if verdict.heatmap else None,
        regions=[RegionOut(bbox=(r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h),
                           **{k: getattr(r, k) for k in RegionOut.model_fields if k != "bbox"})
                 for r in verdict.regions],
        labels=[LabelOut.model_validate(x, from_attributes=True)
                for x in labels_for(session, verdict.id)],
        links={"overlay": f"{base}/overlay.png", "masks": f"{base}/masks.png",
               "frame": f"{base}/frame", "labels": f"{base}/labels"})


@router.get("/verdicts/{verdict_id}", response_model=VerdictDetail, responses=errors(404),
            summary="One verdict with its regions and labels")
def get_verdict(verdict_id: VerdictId, session: SessionDep) -> VerdictDetail:
    return verdict_detail(session, verdict_id)


def _frame(session: Session, verdict: Verdict) -> Frame:
    frame = session.get(Frame, verdict.frame_id)
    assert frame is not None  # verdicts.frame_id is a foreign key
    return frame


@router.get("/verdicts/{verdict_id}/overlay.png", response_class=Response, responses=PNG,
            summary="Frame with the heatmap and region outlines")
def overlay(verdict_id: VerdictId, request: Request,
            session: SessionDep,
            max_side: Annotated[int | None, Query(
                ge=16, le=4096, description="Scale down to this longer side (thumbnails).")
            ] = None) -> Response:
    from workers.api.images import overlay_png, thumbnail_png
    from workers.api.thumbnails import CACHE_CONTROL, STORED_SIDES, stored, stored_or_rendered

    variant = f"overlay-{max_side}"
    if max_side in STORED_SIDES and (png := stored(session, verdict_id, variant)) is not None:
        # One primary-key read: no verdict, heatmap, regions or frame loaded.
        return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})
    verdict, height, width = load_verdict(session, verdict_id)
    frame_dir = request.app.state.settings.api.frame_dir
    if max_side is None:  # full size carries the regions' words, which operators change
        png = overlay_png(verdict, load_frame(_frame(session, verdict), frame_dir),
                          height, width)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=60"})
    def render() -> bytes:
        return thumbnail_png(verdict, load_frame(_frame(session, verdict), frame_dir),
                             height, width, max_side)

    # Only the console's sizes are stored: any other size is rendered each time, so
    # asking for every size from 16 to 4096 cannot fill the table.
    png = (stored_or_rendered(session, verdict.id, variant, render)
           if max_side in STORED_SIDES else render())
    return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})


@router.get("/verdicts/{verdict_id}/masks.png", response_class=Response, responses=PNG,
            summary="Region masks: pixel = region index + 1, or 0/255 for ?region=")
def masks(verdict_id: VerdictId, session: SessionDep,
          region: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> Response:
    from workers.api.images import masks_png

    verdict, height, width = load_verdict(session, verdict_id)
    if region is not None and region not in {r.index for r in verdict.regions}:
        raise ApiError(404, f"verdict {verdict_id} has no region {region}")
    return Response(masks_png(verdict, height, width, region), media_type="image/png")


@router.get("/verdicts/{verdict_id}/frame", response_class=Response, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}},
          "description": "The frame as the camera sent it"}, **errors(404)},
            summary="The original frame bytes, if kept")
def frame(verdict_id: VerdictId, request: Request,
          session: SessionDep) -> Response:
    verdict, _, _ = load_verdict(session, verdict_id)
    row = _frame(session, verdict)
    data = load_frame(row, request.app.state.settings.api.frame_dir)
    if data is None:
        raise ApiError(404, "the frame's bytes were not kept or have passed retention")
    return Response(data, media_type=row.content_type)


def latest_per_camera(session: Session) -> list[Verdict]:
    # One index probe per camera on (camera_id, captured_at), not a scan of verdicts.
    newest = (select(Verdict.id).where(Verdict.camera_id == Camera.id)
              .order_by(Verdict.captured_at.desc(), Verdict.id.desc()).limit(1)
              .correlate(Camera).scalar_subquery())
    return list(session.scalars(select(Verdict).join(Camera, Verdict.id == newest)
                                .order_by(Verdict.line_id, Verdict.camera_id)))


@router.get("/live", response_model=list[VerdictSummary],
            summary="The latest verdict of every camera")
def live(session: SessionDep) -> list[VerdictSummary]:
    return summaries(session, latest_per_camera(session))


def _rate(row: history.RateRow) -> RateOut:
    return RateOut(key=row.key, total=row.total, anomalous=row.anomalous, rate=row.rate)


@router.get("/aggregates/defect-rate", response_model=list[RateOut], tags=["aggregates"],
            summary="Verdicts and defect rate per hour (UTC), camera, line or product")
def defect_rate(request: Request, f: FilterDep, session: SessionDep,
                by: Literal["hour", "camera", "line", "product"] = "hour") -> list[RateOut]:
    window = f.window(request.app.state.clock(), timedelta(hours=24))
    return [_rate(r) for r in history.defect_rate(session, window, by)]


@router.get("/aggregates/defect-kinds", response_model=list[KindOut], tags=["aggregates"],
            summary="Top defect kinds in the window (default: last 24 h)")
def defect_kinds(request: Request, f: FilterDep, session: SessionDep,
                 top: Annotated[int, Query(ge=1, le=100)] = 10) -> list[KindOut]:
    window = f.window(request.app.state.clock(), timedelta(hours=24))
    return [KindOut(**k.__dict__, label=kind_label(k.description))
            for k in history.defect_kinds(session, window, top=top)]


@router.get("/aggregates/trend", response_model=TrendOut, tags=["aggregates"],
            summary="This window against the previous one of the same length")
def trend(request: Request, f: FilterDep, session: SessionDep,
          top: Annotated[int, Query(ge=1, le=100)] = 10) -> TrendOut:
    window = f.window(request.app.state.clock(), timedelta(hours=24))
    t = history.trend(session, window, now=request.app.state.clock(), top=top)
    assert window.since is not None and window.until is not None
    return TrendOut(since=window.since, until=window.until, current=_rate(t.current),
                    previous=_rate(t.previous), rate_change=t.rate_change,
                    kinds=[{**k.__dict__, "change": k.change} for k in t.kinds])


# Buckets per series are capped so a year of hours cannot be asked for in one go.
_DEFAULT_PERIOD = {"hour": timedelta(hours=24), "shift": timedelta(days=7),
                   "day": timedelta(days=30), "week": timedelta(weeks=26)}
_MAX_PERIOD = {"hour": timedelta(days=31), "shift": timedelta(days=92),
               "day": timedelta(days=731), "week": timedelta(days=3660)}


def series_window(request: Request, f: history.HistoryFilter,
                   bucket: str) -> history.HistoryFilter:
    window = f.window(request.app.state.clock(), _DEFAULT_PERIOD[bucket])
    assert window.since is not None and window.until is not None
    if window.until - window.since > _MAX_PERIOD[bucket]:
        raise ApiError(422, f"a {bucket} series covers at most "
                            f"{_MAX_PERIOD[bucket].days} days; narrow since/until")
    return window


_SERIES_WINDOW = ("Default window: the last 24 h by hour, 7 days by shift, 30 by day, 26 "
                  "weeks by week; at most 31 days by hour, 92 by shift, 731 by day, 3660 by "
                  "week (a longer since/until is a 422).")


@router.get("/aggregates/defect-rate-series", response_model=list[SeriesPointOut],
            tags=["aggregates"], description=_SERIES_WINDOW,
            summary="Defect rate per time bucket and line, camera or product")
def defect_rate_series(request: Request, f: FilterDep, session: SessionDep,
                       by: Literal["line", "camera", "product"] = "line",
                       bucket: Literal["hour", "shift", "day", "week"] = "hour",
                       ) -> list[SeriesPointOut]:
    window = series_window(request, f, bucket)
    return [SeriesPointOut(bucket=p.bucket, key=p.key, total=p.total, anomalous=p.anomalous,
                           rate=p.rate)
            for p in trends.rate_series(session, window, by=by, bucket=bucket)]


@router.get("/aggregates/defect-kinds-series", response_model=list[KindPointOut],
            tags=["aggregates"], description=_SERIES_WINDOW,
            summary="Verdicts per defect kind and time bucket: the top kinds, the rest as "
                    "'other'")
def defect_kinds_series(request: Request, f: FilterDep, session: SessionDep,
                        bucket: Literal["hour", "shift", "day", "week"] = "hour",
                        top: Annotated[int, Query(
                            ge=1, le=50, description="Kinds with most verdicts in the "
                            "period that keep their name; the rest are 'other'.")] = 8,
                        ) -> list[KindPointOut]:
    window = series_window(request, f, bucket)
    return [KindPointOut(**p.__dict__, label=kind_label(p.description))
            for p in trends.kind_series(session, window, bucket=bucket, top=top)]


@router.get("/aggregates/score-histogram", response_model=HistogramOut, tags=["aggregates"],
            summary="Scores of normal and anomalous verdicts, with the threshold")
def score_histogram(request: Request, f: FilterDep, session: SessionDep,
                    bins: Annotated[int, Query(ge=1, le=trends.MAX_BINS)] = 40,
                    ) -> HistogramOut:
    window = f.window(request.app.state.clock(), timedelta(hours=24))
    return HistogramOut(**trends.score_histogram(session, window, bins=bins).__dict__)


@router.get("/aggregates/score-histograms", response_model=list[ProductHistogramOut],
            tags=["aggregates"],
            summary="One score histogram per product, each with its own threshold")
def score_histograms(request: Request, f: FilterDep, session: SessionDep,
                     bins: Annotated[int, Query(ge=1, le=trends.MAX_BINS)] = 40,
                     ) -> list[ProductHistogramOut]:
    window = f.window(request.app.state.clock(), timedelta(hours=24))
    return [ProductHistogramOut(product=p, **h.__dict__)
            for p, h in trends.product_histograms(session, window, bins=bins).items()]
