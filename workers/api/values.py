"""Bounded value types for path, query and body fields: bad input is a 422, never a 500.

Postgres refuses a NUL byte in text, a BIGINT stops at 2**63 - 1, and Python's
datetime overflows near year 1 and 9999 when an offset or a window length is
applied. Each type below turns one of those into a validation error that names
the field, before any query runs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MAX_DB_ID = 2**63 - 1  # BIGINT
# Far enough from datetime's limits that a trend's previous window
# (since - (until - since)) stays representable.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
# An instant is written as an ISO 8601 date-time whose year is 1970-2999, in whatever
# offset (so up to 14 h outside [EARLIEST, LATEST) once in UTC, still far from the
# limits): the rule the OpenAPI document states as a pattern, and the one checked.
INSTANT_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}"
_INSTANT = re.compile(INSTANT_PATTERN)
NO_NUL_PATTERN = "^[^\u0000]*$"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def instant_text(value: Any) -> Any:  # noqa: ANN401 - whatever the client sent
    """An instant is ISO 8601 text from year 1970 to 2999: a number (pydantic would read
    `0.5` as a Unix time) or another year is refused before it is parsed."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _INSTANT.match(value):
        raise ValueError("must be an ISO 8601 date-time from 1970-01-01 to 2999-12-31, "
                         "e.g. 2026-11-23T08:00:00Z")
    return value


def as_utc(value: datetime) -> datetime:
    """The instant in UTC; no offset is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def in_range_utc(value: datetime) -> datetime:
    """The instant in UTC (no offset: taken as UTC), within [EARLIEST, LATEST)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the supported range of dates") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} up to {LATEST:%Y-%m-%d} (UTC)")
    return value


def json_integer(value: Any) -> Any:  # noqa: ANN401 - whatever the client sent
    """An integer as JSON Schema has it: 5 and 5.0, not true, "5" or 5.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


# The document says what the validators check: no NUL in text, instants by pattern.
Text = Annotated[str, AfterValidator(no_nul), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
Instant = Annotated[datetime, BeforeValidator(instant_text), AfterValidator(as_utc),
                    Field(json_schema_extra={"pattern": INSTANT_PATTERN})]
# a stored time read back in UTC (SQLite hands times back without their zone)
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def json_int(ge: int, le: int) -> Any:  # noqa: ANN401 - an Annotated type
    """An integer in [ge, le] as JSON Schema has it; the bounds apply to the integer
    itself, so the document states them as minimum and maximum."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(json_integer)]


# An id in a JSON body stops at 2**53 - 1: past it a JSON number is not exact in every
# client (JavaScript, and validators working in doubles read 2**63 + 191 as 2**63).
DbId = json_int(1, 2**53 - 1)
