"""The console's Live page: the latest verdict of every camera, its newest thumbnails and
its defect rate over the last hour. The page fetches /console/live every few seconds
and swaps the grid in place (no reload): one template renders both."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage import history, trends
from pipeline.storage.models import Verdict
from workers.api.auth import SessionDep
from workers.api.console import _principal, _render, _to_login
from workers.api.errors import ApiError
from workers.api.routes_history import latest_per_camera, summaries

router = APIRouter(include_in_schema=False)
LIVE_THUMBS = 4
POLL_MS = 5000


def live_context(session: Session, now: datetime) -> dict[str, Any]:
    items = summaries(session, latest_per_camera(session))
    return {"items": items, "recent": recent_per_camera(session, [v.camera_id for v in items]),
            "sparks": last_hour_rates(session, now), "now": now}


@router.get("/", response_class=HTMLResponse)
def live_page(request: Request, session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    return _render(request, "live.html", principal, session, poll_ms=POLL_MS,
                   **live_context(session, request.app.state.clock()))


@router.get("/console/live", response_class=HTMLResponse)
def live_grid(request: Request, session: SessionDep) -> Response:
    """The Live grid alone, for the page's refresh."""
    if (principal := _principal(request, session)) is None:
        raise ApiError(401, "not signed in")
    return request.app.state.templates.TemplateResponse(
        request, "live_grid.html", {"principal": principal,
                                    **live_context(session, request.app.state.clock())})


def recent_per_camera(session: Session, cameras: list[str]) -> dict[str, list[int]]:
    """The newest few verdict ids of each camera (one index probe per camera)."""
    return {c: list(session.scalars(
        select(Verdict.id).where(Verdict.camera_id == c)
        .order_by(Verdict.captured_at.desc(), Verdict.id.desc()).limit(LIVE_THUMBS)))
        for c in cameras}


def last_hour_rates(session: Session, now: datetime) -> dict[str, str]:
    """Per camera, its defect rate in 5-minute buckets over the last hour (JSON for the
    sparkline; buckets without verdicts are null, drawn as gaps)."""
    since = now - timedelta(hours=1)
    points = trends.rate_series(session, history.HistoryFilter(since=since, until=now),
                                by="camera", bucket="5min")
    first = trends.bucket_start(since, "5min")
    slots = [first + timedelta(minutes=5 * i) for i in range(13)]
    slots = [t for t in slots if t < now]
    by_camera: dict[str, dict[datetime, tuple[float, int, int]]] = {}
    for p in points:
        by_camera.setdefault(p.key, {})[p.bucket] = (p.rate, p.anomalous, p.total)
    return {camera: json.dumps({"labels": [t.strftime("%H:%M") for t in slots],
                                "rates": [round(100 * rates[t][0], 2) if t in rates else None
                                          for t in slots],
                                "counts": [[rates[t][1], rates[t][2]] if t in rates else None
                                           for t in slots]})
            for camera, rates in by_camera.items()}
