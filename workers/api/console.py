"""The web console: server-rendered pages over the same queries as the API.

Pages authenticate with the token cookie set by /console/session; without a
valid one they redirect to the login page and render nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.storage import history
from pipeline.storage.models import Camera, Region
from pipeline.storage.tokens import Principal, role_allows, verify_token
from workers.api.auth import COOKIE, SessionDep
from workers.api.errors import ApiError
from workers.api.kinds import generic_kinds, product_kinds
from workers.api.params import CursorDep, FilterDep, LimitDep, VerdictId, encode_cursor
from workers.api.routes_history import latest_per_camera, summaries, verdict_detail

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
            **context: Any) -> Response:
    can_label = principal is not None and role_allows(principal.role, "operator")
    return request.app.state.templates.TemplateResponse(
        request, template, {"principal": principal, "can_label": can_label, **context})


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
    return _render(request, "live.html", principal,
                   items=summaries(session, latest_per_camera(session)))


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
        request, "history.html", principal, items=summaries(session, page.items), args=args,
        next_url=f"/history?{urlencode({**args, 'cursor': nxt})}" if nxt else None,
        cameras=list(session.scalars(select(Camera.id).order_by(Camera.id))),
        kinds=list(session.scalars(select(Region.description).distinct().where(
            Region.description.is_not(None)).order_by(Region.description).limit(200))))


@router.get("/verdicts/{verdict_id}", response_class=HTMLResponse)
def verdict_page(verdict_id: VerdictId, request: Request,
                 session: SessionDep) -> Response:
    if (principal := _principal(request, session)) is None:
        return _to_login(request)
    v = verdict_detail(session, verdict_id)
    return _render(request, "verdict.html", principal, v=v,
                   product_kinds=product_kinds(session, v.product),
                   generic_kinds=generic_kinds())
