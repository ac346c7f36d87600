"""One JSON error shape for every failure: {"error": {status, code, message, details}}.

Clients (and the console's JS) read one field whatever went wrong, and a 401
or 403 body says only that, never anything about the data asked for. A browser
opening a page (a GET that accepts text/html) gets the same message as a page
of the console instead, with a way back.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
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


def wants_html(method: str, accept: str) -> bool:
    """A browser opening a page, not a script or the console's own fetch() calls."""
    return method in ("GET", "HEAD") and "text/html" in accept


_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found",
           405: "Not allowed", 409: "Conflict", 422: "Some values are not valid",
           500: "Something went wrong", 503: "The database is unavailable"}
_HINTS = {"float_parsing": "a number, with a dot as the decimal separator (0.5, not 0,5)",
          "int_parsing": "a whole number", "datetime_from_date_parsing": "a date and time "
          "such as 2026-11-23T08:00 (UTC)", "literal_error": "one of the offered values"}


def error_page(request: Request, status: int, message: str,
               details: list[dict[str, Any]] | None = None,
               headers: dict[str, str] | None = None) -> Response:
    """The error as an HTML page for a browser, or the JSON body for everyone else."""
    body = error_body(status, message, details=details)
    if not wants_html(request.method, request.headers.get("accept", "")):
        return JSONResponse(body, status_code=status, headers=headers)
    rows = [{"where": d["loc"].removeprefix("query.").removeprefix("path."),
             "given": d.get("input"), "expected": _HINTS.get(d.get("type", ""), d["msg"])}
            for d in details or []]
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"status": status, "title": _TITLES.get(status, "Error"),
                                "message": message, "rows": rows, "principal": None,
                                "active_alarms": []},
        status_code=status, headers=headers)


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
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = getattr(exc, "code", None)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}),
                       "Allow": ", ".join(allowed_methods(app, request.scope))}
        if wants_html(request.method, request.headers.get("accept", "")):
            return error_page(request, exc.status_code, str(exc.detail), headers=headers)
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc)
        where = ", ".join(d["loc"] for d in details) or "request"
        if wants_html(request.method, request.headers.get("accept", "")):
            types = [{"type": e.get("type", "")} for e in exc.errors()]
            return error_page(request, 422, f"invalid parameters: {where}",
                              [{**d, **t} for d, t in zip(details, types, strict=False)])
        return JSONResponse(error_body(422, f"invalid parameters: {where}", details=details),
                            status_code=422)

    async def _database_down(request: Request, exc: Exception) -> Response:
        # The driver's message may name hosts and users: it goes to the log, not the client.
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path,
                    getattr(exc, "orig", None) or exc)
        if wants_html(request.method, request.headers.get("accept", "")):
            return error_page(request, 503, "the database is unavailable; retry later",
                              headers={"Retry-After": "5"})
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
            accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
            response: Response = JSONResponse(error_body(500, "internal error"),
                                              status_code=500)
            if wants_html(scope["method"], accept):
                response = HTMLResponse(_PLAIN_500, status_code=500)
            await response(scope, receive, send)


# No template here: whatever failed may be what templates need.
_PLAIN_500 = ("<!doctype html><html lang=en><meta charset=utf-8><title>Error · clad-line"
              "</title><link rel=stylesheet href=/static/console.css><main class=card>"
              "<h1>Something went wrong</h1><p>The server could not answer this page; the "
              "error is in its log.</p><p><a href=/>Back to the console</a></p></main></html>")
