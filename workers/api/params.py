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

from engine.defects.kind_names import KindNameError, kind_key
from pipeline.storage.history import MAX_PAGE, Cursor, HistoryFilter, OperatorFilter
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
        max_length=200, description="A defect kind: the kind key a region shows (the "
        "operator's, else the describer's; 'a scratch' and 'scratches' mean 'scratch'), "
        "or a region's exact words.")] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False,
                                             description="Raw score at least.")] = None,
    max_score: Annotated[float | None, Query(
        allow_inf_nan=False, description="At least `min_score` (else 422).")] = None,
    min_relative: Annotated[float | None, Query(
        allow_inf_nan=False, description="score / threshold at least (1.0 = the "
                                         "threshold, on every product).")] = None,
    max_relative: Annotated[float | None, Query(
        allow_inf_nan=False, description="At least `min_relative` (else 422).")] = None,
    operator: Annotated[OperatorFilter | None, Query(
        description="What operators said: none (unlabelled), any, normal / anomalous (their "
                    "latest decision), described (a corrected region description), "
                    "overruled (their decision differs from the model's).")] = None,
) -> HistoryFilter:
    if since is not None and until is not None and since >= until:
        raise _invalid("until", "must be later than since", until.isoformat())
    if min_score is not None and max_score is not None and min_score > max_score:
        raise _invalid("max_score", "must be at least min_score", max_score)
    if min_relative is not None and max_relative is not None and min_relative > max_relative:
        raise _invalid("max_relative", "must be at least min_relative", max_relative)
    return HistoryFilter(line_id=line or None, camera_id=camera or None,
                         product=product or None, since=since, until=until, label=verdict,
                         description=defect or None, description_key=defect_key(defect),
                         min_score=min_score, max_score=max_score, min_relative=min_relative,
                         max_relative=max_relative, operator=operator)


def defect_key(defect: str | None) -> str | None:
    """The kind key a typed kind folds into, or None where it names none."""
    if not defect:
        return None
    try:
        return kind_key(defect)
    except KindNameError:
        return None


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
