"""The web console: server-rendered pages over the same queries as the API.

Pages authenticate with the cookie set by /console/session (an operator account's
session, or a token); without a valid one they redirect to the login page and
render nothing. Times are UTC everywhere, and labelled so.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage import history
from pipeline.storage.alarms import list_alarms
from pipeline.storage.models import AlarmRule, Camera, ProductionLine, Verdict
from pipeline.storage.tokens import Principal, role_allows
from workers.api.auth import COOKIE, SessionDep, verify_secret
from workers.api.kinds import generic_kinds, kind_label, product_kinds
from workers.api.params import CursorDep, FilterDep, LimitDep, VerdictId, encode_cursor
from workers.api.routes_alarms import alarm_out
from workers.api.routes_history import series_window, summaries, verdict_detail
from workers.api.routes_review import load_conflicts, load_review
from workers.api.schemas import LabelOut

router = APIRouter(include_in_schema=False)


def _principal(request: Request, session: Session) -> Principal | None:
    secret = request.cookies.get(COOKIE)
    return verify_secret(session, secret, request.app.state.clock()) if secret else None


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
        kinds=[(k, kind_label(k)) for k in session.scalars(
            select(history.shown_kind()).distinct().where(history.shown_kind().is_not(None))
            .order_by(history.shown_kind()).limit(200))])


@router.get("/verdicts/{verdict_id}", response_class=HTMLResponse)
def verdict_page(verdict_id: VerdictId, request: Request,
                 session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    v = verdict_detail(session, verdict_id)
    return _render(request, "verdict.html", principal, session, v=v,
                   label_states=label_states(v.labels),
                   product_kinds=product_kinds(session, v.product),
                   generic_kinds=generic_kinds())


def label_states(labels: list[LabelOut]) -> dict[int, str]:
    """Per label id: "current" for the latest word (the latest decision on the verdict,
    the latest description of each region), "superseded" for the earlier ones."""
    latest: dict[object, int] = {}
    for x in labels:  # oldest first
        if x.label in ("normal", "anomalous"):
            latest["decision"] = x.id
        elif x.label == "description":
            latest[("region", x.region_id)] = x.id
    current = set(latest.values())
    return {x.id: "current" if x.id in current else "superseded"
            for x in labels if x.label in ("normal", "anomalous", "description")}


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
                   rules=json.dumps(alarm_levels(session, by)),
                   # Products seen in the period: a DISTINCT over all time would scan it all.
                   products=list(session.scalars(
                       select(Verdict.product).distinct().where(
                           Verdict.captured_at >= window.since,
                           Verdict.captured_at < window.until)
                       .order_by(Verdict.product).limit(200))),
                   lines=list(session.scalars(select(ProductionLine.id)
                                              .order_by(ProductionLine.id))))


def alarm_levels(session: Session, by: str) -> list[dict[str, Any]]:
    """The enabled alarm rules drawn on a rate chart per line or camera: their level."""
    if by not in ("line", "camera"):
        return []
    return [{"name": r.name, "target": r.target, "rate": round(100 * r.max_rate, 2),
             "window_minutes": r.window_minutes}
            for r in session.scalars(select(AlarmRule).where(
                AlarmRule.scope == by, AlarmRule.enabled.is_(True)).order_by(AlarmRule.id))]


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, session: SessionDep, limit: LimitDep,
                after: CursorDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    q = load_review(request, session, limit, after)
    args = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return _render(request, "review.html", principal, session, q=q,
                   next_url=(f"/review?{urlencode({**args, 'cursor': q.next_cursor})}"
                             if q.next_cursor else None),
                   first_url="/review" + (f"?{urlencode(args)}" if args else ""),
                   paged=after is not None,
                   kinds_by_product={p: product_kinds(session, p)
                                     for p in sorted({v.product for v in q.items})},
                   generic_kinds=generic_kinds(),
                   conflicts=load_conflicts(session, 20),
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
