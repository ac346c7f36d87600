"""Bounded value types for path, query and body fields: bad input is a 422, never a 500.

Postgres refuses a NUL byte in text, a BIGINT stops at 2**63 - 1, and Python's
datetime overflows near year 1 and 9999 when an offset or a window length is
applied. Each type below turns one of those into a validation error that names
the field, before any query runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_DB_ID = 2**63 - 1  # BIGINT
# Far enough from datetime's limits that a trend's previous window
# (since - (until - since)) stays representable.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


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


def as_utc(value: datetime) -> datetime:
    """A stored time in UTC: SQLite hands them back without their zone (stored in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Text = Annotated[str, AfterValidator(no_nul)]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Instant = Annotated[datetime, AfterValidator(in_range_utc)]
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
