"""The web console: server-rendered pages over the same queries as the API.

Pages authenticate with the token cookie set by /console/session; without a
valid one they redirect to the login page and render nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage import history, trends
from pipeline.storage.alarms import list_alarms
from pipeline.storage.models import AlarmRule, Camera, ProductionLine, Region, Verdict
from pipeline.storage.tokens import Principal, role_allows, verify_token
from workers.api.auth import COOKIE, SessionDep
from workers.api.errors import ApiError
from workers.api.kinds import generic_kinds, product_kinds
from workers.api.params import CursorDep, FilterDep, LimitDep, VerdictId, encode_cursor
from workers.api.routes_alarms import alarm_out
from workers.api.routes_history import (
    latest_per_camera,
    series_window,
    summaries,
    verdict_detail,
)
from workers.api.routes_review import load_review

router = APIRouter(include_in_schema=False)


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=200)


def _principal(request: Request, session: Session) -> Principal | None:
    secret = request.cookies.get(COOKIE)
    return verify_token(session, secret, now=request.app.state.clock()) if secret else None


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _render(request: Request, template: str, principal: Principal | None,
            session: Session | None = None, **context: Any) -> Response:
    can_label = principal is not None and role_allows(principal.role, "operator")
    is_admin = principal is not None and role_allows(principal.role, "admin")
    # Every signed-in page carries the banner of active (unacknowledged) alarms.
    alarms = ([alarm_out(a) for a in list_alarms(session, state="active", limit=20)]
              if session is not None and principal is not None else [])
    return request.app.state.templates.TemplateResponse(
        request, template, {"principal": principal, "can_label": can_label,
                            "is_admin": is_admin, "active_alarms": alarms, **context})


def same_origin_path(target: str) -> str:
    """`target` if it is a path on this console, else the console home ("/").

    Browsers read a backslash as a slash and drop tabs and newlines from URLs,
    so a slash followed by a backslash or a tab and a slash reaches another host
    like "//evil.example" would: backslashes and control characters are refused.
    """
    if (not target.startswith("/") or target.startswith("//")
            or any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in target)):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    # Only paths on this console: never bounce a fresh login to another host.
    return _render(request, "login.html", None, next=same_origin_path(next))


@router.post("/console/session")
def login(body: Login, request: Request, response: Response, session: SessionDep) -> dict:
    principal: Principal | None = verify_token(session, body.token.strip(),
                                               now=request.app.state.clock())
    if principal is None:
        raise ApiError(401, "unknown, revoked or expired token")
    response.set_cookie(COOKIE, body.token.strip(), httponly=True, samesite="strict",
                        max_age=12 * 3600, path="/")
    return {"name": principal.name, "role": principal.role}


@router.post("/console/logout")
def logout(response: Response) -> dict:
    response.delete_cookie(COOKIE, path="/")
    return {"ok": True}


@router.get("/", response_class=HTMLResponse)
def live_page(request: Request, session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    items = summaries(session, latest_per_camera(session))
    return _render(request, "live.html", principal, session, items=items,
                   recent=recent_per_camera(session, [v.camera_id for v in items]),
                   sparks=last_hour_rates(session, request.app.state.clock()))


LIVE_THUMBS = 4


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
    by_camera: dict[str, dict[datetime, float]] = {}
    for p in points:
        by_camera.setdefault(p.key, {})[p.bucket] = p.rate
    return {camera: json.dumps({"labels": [t.strftime("%H:%M") for t in slots],
                                "rates": [round(100 * rates[t], 2) if t in rates else None
                                          for t in slots]})
            for camera, rates in by_camera.items()}


@router.get("/history", response_class=HTMLResponse)
def history_page(request: Request, f: FilterDep,
                 after: CursorDep,
                 limit: LimitDep,
                 session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    page = history.list_verdicts(session, f, limit=limit, after=after)
    args = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    nxt = encode_cursor(page.next_cursor)
    return _render(
        request, "history.html", principal, session, items=summaries(session, page.items),
        args=args,
        next_url=f"/history?{urlencode({**args, 'cursor': nxt})}" if nxt else None,
        csv_query=urlencode({**{k: v for k, v in args.items() if k != "limit"},
                             "limit": history.MAX_PAGE}),
        cameras=list(session.scalars(select(Camera.id).order_by(Camera.id))),
        kinds=list(session.scalars(select(Region.description).distinct().where(
            Region.description.is_not(None)).order_by(Region.description).limit(200))))


@router.get("/verdicts/{verdict_id}", response_class=HTMLResponse)
def verdict_page(verdict_id: VerdictId, request: Request,
                 session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    v = verdict_detail(session, verdict_id)
    return _render(request, "verdict.html", principal, session, v=v,
                   product_kinds=product_kinds(session, v.product),
                   generic_kinds=generic_kinds())


@router.get("/trends", response_class=HTMLResponse)
def trends_page(request: Request, f: FilterDep, session: SessionDep,
                by: Literal["line", "camera", "product"] = "line",
                bucket: Literal["hour", "shift", "day", "week"] = "hour") -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    window = series_window(request, f, bucket)
    assert window.since is not None and window.until is not None
    # The charts fetch with the resolved period, so what they draw is what the page says.
    query = {k: v for k, v in {"product": f.product, "line": f.line_id, "camera": f.camera_id,
                               "by": by, "bucket": bucket,
                               "since": window.since.isoformat(),
                               "until": window.until.isoformat()}.items() if v}
    args = {**{k: v for k, v in request.query_params.items() if v}, "by": by, "bucket": bucket}
    return _render(request, "trends.html", principal, session, args=args, query=urlencode(query),
                   since=window.since, until=window.until,
                   # Products seen in the period: a DISTINCT over all time would scan it all.
                   products=list(session.scalars(
                       select(Verdict.product).distinct().where(
                           Verdict.captured_at >= window.since,
                           Verdict.captured_at < window.until)
                       .order_by(Verdict.product).limit(200))),
                   lines=list(session.scalars(select(ProductionLine.id)
                                              .order_by(ProductionLine.id))))


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, session: SessionDep, limit: LimitDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    return _render(request, "review.html", principal, session,
                   q=load_review(request, session, limit),
                   window_hours=request.app.state.settings.review.review_window_hours)


@router.get("/alarms", response_class=HTMLResponse)
def alarms_page(request: Request, session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    return _render(request, "alarms.html", principal, session,
                   recent=[alarm_out(a) for a in list_alarms(session, state="all", limit=50)],
                   rules=list(session.scalars(select(AlarmRule).order_by(AlarmRule.id))),
                   lines=list(session.scalars(select(ProductionLine.id)
                                              .order_by(ProductionLine.id))),
                   cameras=list(session.scalars(select(Camera.id).order_by(Camera.id))),
                   interval_s=request.app.state.settings.alarms.alarm_interval_s,
                   destination=request.app.state.alarms.destination)
