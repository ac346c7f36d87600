"""Signing in to the console: an operator account's name and password (a console session),
or an API token pasted as before (scripts' tokens, the bootstrap admin)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, model_validator

from pipeline.storage.tokens import Principal, verify_token
from pipeline.storage.users import SESSION_PREFIX, authenticate, end_session, start_session
from workers.api.auth import COOKIE, SessionDep
from workers.api.console import _render, same_origin_path
from workers.api.errors import ApiError, error_body
from workers.api.values import Text

router = APIRouter(include_in_schema=False)
SESSION_HOURS = 12  # a shift, and the cookie's lifetime


class Login(BaseModel):
    """Either username + password, or token."""

    username: Text | None = Field(None, min_length=1, max_length=100)
    password: str | None = Field(None, min_length=1, max_length=1000)
    token: Text | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_way(self) -> Login:
        if (self.token is None) == (self.username is None or self.password is None):
            raise ValueError("give username and password, or token")
        return self


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    # Only paths on this console: never bounce a fresh login to another host.
    return _render(request, "login.html", None, next=same_origin_path(next))


@router.post("/console/session", response_model=None)
def login(body: Login, request: Request, response: Response,
          session: SessionDep) -> dict | JSONResponse:
    now = request.app.state.clock()
    if body.token is not None:
        secret = body.token.strip()
        principal = verify_token(session, secret, now=now)
        if principal is None:
            raise ApiError(401, "unknown, revoked or expired token")
    else:
        assert body.username is not None and body.password is not None
        user = authenticate(session, body.username, body.password, now=now)
        if user is None:
            # One answer for every failure: it never tells which names exist. Returned,
            # not raised, so the transaction commits the count of wrong passwords.
            return JSONResponse(error_body(401, "unknown name or wrong password (5 wrong in "
                                                "a row lock the account for 5 minutes)"),
                                status_code=401)
        secret = start_session(session, user, lifetime=timedelta(hours=SESSION_HOURS), now=now)
        principal = Principal(None, user.username, user.role)
    response.set_cookie(COOKIE, secret, httponly=True, samesite="strict",
                        max_age=SESSION_HOURS * 3600, path="/")
    return {"name": principal.name, "role": principal.role}


@router.post("/console/logout")
def logout(request: Request, response: Response, session: SessionDep) -> dict:
    secret = request.cookies.get(COOKIE)
    if secret and secret.startswith(SESSION_PREFIX):
        end_session(session, secret, now=request.app.state.clock())
    response.delete_cookie(COOKIE, path="/")
    return {"ok": True}
