"""Query parameters shared by the history and aggregate routes, validated up front.

Everything malformed becomes a 422 naming the parameter, before any query runs.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError

from pipeline.storage.history import MAX_PAGE, Cursor, HistoryFilter


def _invalid(name: str, msg: str, value: object) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", name),
                                    "msg": msg, "input": value}])


def _utc(value: datetime | None) -> datetime | None:
    # A time without an offset is taken as UTC, the zone everything is stored in.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def history_filter(
    line: Annotated[str | None, Query(max_length=64, description="Production line id.")] = None,
    camera: Annotated[str | None, Query(max_length=64, description="Camera id.")] = None,
    product: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[datetime | None,
                     Query(description="Captured at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Captured before (ISO 8601).")] = None,
    verdict: Literal["normal", "anomalous"] | None = None,
    defect: Annotated[str | None, Query(
        max_length=200, description="Exact defect kind (region description).")] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    max_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> HistoryFilter:
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise _invalid("until", "must be later than since", until.isoformat())
    if min_score is not None and max_score is not None and min_score > max_score:
        raise _invalid("max_score", "must be at least min_score", max_score)
    return HistoryFilter(line_id=line or None, camera_id=camera or None,
                         product=product or None, since=since, until=until, label=verdict,
                         description=defect or None, min_score=min_score, max_score=max_score)


def encode_cursor(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    raw = f"{cursor.captured_at.astimezone(UTC).isoformat()}|{cursor.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def page_cursor(
    cursor: Annotated[str | None, Query(
        max_length=200, description="`next_cursor` from the previous page.")] = None,
) -> Cursor | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        return Cursor(datetime.fromisoformat(when), int(ident))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid("cursor", "not a cursor returned by this API", cursor) from None


def page_limit(limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50) -> int:
    return limit


FilterDep = Annotated[HistoryFilter, Depends(history_filter)]
CursorDep = Annotated[Cursor | None, Depends(page_cursor)]
LimitDep = Annotated[int, Depends(page_limit)]
