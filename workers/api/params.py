"""Query parameters shared by the history and aggregate routes, validated up front.

Everything malformed becomes a 422 naming the parameter, before any query runs.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Path, Query
from fastapi.exceptions import RequestValidationError

from pipeline.storage.history import MAX_PAGE, Cursor, HistoryFilter
from workers.api.values import MAX_DB_ID, Instant, Text, in_range_utc


def _invalid(name: str, msg: str, value: object) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", name),
                                    "msg": msg, "input": value}])


def history_filter(
    line: Annotated[Text | None, Query(max_length=64, description="Production line id.")] = None,
    camera: Annotated[Text | None, Query(max_length=64, description="Camera id.")] = None,
    product: Annotated[Text | None, Query(max_length=100)] = None,
    since: Annotated[Instant | None, Query(
        description="Captured at or after: ISO 8601, a year from 1970 to 2999 (no offset "
                    "means UTC).")] = None,
    until: Annotated[Instant | None, Query(
        description="Captured before: ISO 8601, a year from 1970 to 2999; later than "
                    "`since` (else 422).")] = None,
    verdict: Literal["normal", "anomalous"] | None = None,
    defect: Annotated[Text | None, Query(
        max_length=200, description="Exact defect kind (region description).")] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    max_score: Annotated[float | None, Query(
        allow_inf_nan=False, description="At least `min_score` (else 422).")] = None,
) -> HistoryFilter:
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
        max_length=200, description="`next_cursor` from the previous page; any other "
                                    "value is a 422.")] = None,
) -> Cursor | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        key = int(ident)
        if not 1 <= key <= MAX_DB_ID:
            raise ValueError("id out of range")
        return Cursor(in_range_utc(datetime.fromisoformat(when)), key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid("cursor", "not a cursor returned by this API", cursor) from None


def page_limit(limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50) -> int:
    return limit


VerdictId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="Verdict id.")]
FilterDep = Annotated[HistoryFilter, Depends(history_filter)]
CursorDep = Annotated[Cursor | None, Depends(page_cursor)]
LimitDep = Annotated[int, Depends(page_limit)]
