"""The published OpenAPI document, completed with what every operation can answer.

FastAPI documents each route's success and a 422 in its own error shape. The API
answers every error in one shape (workers.api.errors), so the document says so:
422 in that shape, 401 and 403 on every operation (all of them need a token, sent
as a bearer token: the security scheme), 503 while the database is unreachable, and
the 404 / 409 each route declares with `errors(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from workers.api.schemas import ErrorOut

_WHY = {400: "The body is not JSON.", 401: "No token, or an unknown, revoked or expired one.",
        403: "The token's role may not do this.",
        404: "Not found.", 409: "Conflicts with the current state.",
        422: "Invalid parameters or body; details name each one.",
        503: "The database is unavailable; retry after Retry-After seconds."}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these error statuses in the API's error shape."""
    return {s: {"model": ErrorOut, "description": _WHY[s]} for s in statuses}


def install_document(app: FastAPI) -> None:
    """app.openapi() builds the completed document once, then serves it as built."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            components = doc.setdefault("components", {})
            components.setdefault("schemas", {})["ErrorOut"] = ErrorOut.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["schemas"].update(
                components["schemas"]["ErrorOut"].pop("$defs", {}))
            components["securitySchemes"] = {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token (`clad token create`); the console sends "
                               "it as a cookie."}}
            doc["security"] = [{"bearer": []}]
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    body = (400,) if "requestBody" in operation else ()
                    for status in (*body, 401, 403, 422, 503):
                        responses[str(status)] = {
                            "description": _WHY[status],
                            "content": {"application/json": {"schema": _ERROR_REF}}}
            schemas = components["schemas"]
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
