"""One JSON error shape for every failure: {"error": {status, code, message, details}}.

Clients (and the console's JS) read one field whatever went wrong, and a 401
or 403 body says only that, never anything about the data asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 422: "invalid_request",
          500: "internal_error", 503: "unavailable"}
# The database cannot be reached, dropped the connection, or the pool is exhausted:
# the request may succeed later, which is what 503 says (a 500 says it never will).
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeoutError)


class ApiError(HTTPException):
    """An HTTP error with a stable machine-readable code."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code or _CODES.get(status, "error")


def error_body(status: int, message: str, code: str | None = None,
               details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": {"status": status, "code": code or _CODES.get(status, "error"),
                      "message": message, "details": details or []}}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err.get("loc", ()))
        # The offending input is echoed only for query/path values; bodies may hold masks.
        item = {"loc": loc, "msg": err.get("msg", "invalid")}
        if loc.startswith(("query.", "path.")) and "input" in err:
            item["input"] = str(err["input"])[:100]
        details.append(item)
    return details


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first
    route that matched the path (GET /alarm-rules, not its POST twin), so each method is
    tried against the whole router."""
    return [method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL
                   for route in app.router.routes)]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}),
                       "Allow": ", ".join(allowed_methods(app, request.scope))}
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        where = ", ".join(d["loc"] for d in details) or "request"
        return JSONResponse(error_body(422, f"invalid parameters: {where}", details=details),
                            status_code=422)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # The driver's message may name hosts and users: it goes to the log, not the client.
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path,
                    getattr(exc, "orig", None) or exc)
        return JSONResponse(error_body(503, "the database is unavailable; retry later",
                                       "database_unavailable"),
                            status_code=503, headers={"Retry-After": "5"})

    for kind in DATABASE_DOWN:
        app.add_exception_handler(kind, _database_down)

    app.add_middleware(UnforeseenErrorAsJson)


class UnforeseenErrorAsJson:
    """Any exception no handler took becomes a logged, JSON 500.

    An `Exception` handler would run in Starlette's outermost middleware, which
    re-raises after answering, and uvicorn then drops the connection: a client's
    next request on it would fail too. Answering here ends the request cleanly.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:  # half a response is out: nothing sane can follow it
                raise
            await JSONResponse(error_body(500, "internal error"), status_code=500)(
                scope, receive, send)
