"""One JSON error shape for every failure: {"error": {status, code, message, details}}.

Clients (and the console's JS) read one field whatever went wrong, and a 401
or 403 body says only that, never anything about the data asked for.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 422: "invalid_request",
          500: "internal_error"}


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None)
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        where = ", ".join(d["loc"] for d in details) or "request"
        return JSONResponse(error_body(422, f"invalid parameters: {where}", details=details),
                            status_code=422)
