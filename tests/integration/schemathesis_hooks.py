"""Rules between parameters that a JSON Schema cannot state, taught to schemathesis.

Loaded by tests/integration/test_api_schemathesis.py (SCHEMATHESIS_HOOKS). Each rule
is in the operation's description in the document, and the API answers 422 naming it;
a request that breaks one is not "schema-valid data the API rejects", so schemathesis
does not send it as positive data. Negative cases are left alone, and every single
parameter is still checked against the document as it stands.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import schemathesis
from pydantic import TypeAdapter, ValidationError

from engine.defects.kind_names import KindNameError, kind_key
from pipeline.storage.history import HistoryFilter
from tests.integration.operator_data import CAMERAS, T0
from workers.api.routes_history import _DEFAULT_PERIOD, _MAX_PERIOD
from workers.api.values import Instant

CLOCK = T0 + timedelta(hours=4)  # the API's clock in the test
FRAME = (48, 64)  # (height, width) of every seeded frame
_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)


def _instant(query: dict[str, Any], name: str) -> datetime | None:
    try:
        return _INSTANT.validate_python(query[name]) if name in query else None
    except ValidationError:
        return None


def _query_keeps_the_rules(path: str, query: dict[str, Any]) -> bool:
    since, until = _instant(query, "since"), _instant(query, "until")
    if since is not None and until is not None and since >= until:
        return False  # until must be later than since
    low, high = query.get("min_score"), query.get("max_score")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        return False  # max_score must be at least min_score
    low, high = query.get("min_relative"), query.get("max_relative")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        return False  # max_relative must be at least min_relative
    if query.get("cursor"):
        return False  # a cursor is what a previous page returned, nothing else
    if path.endswith("-series"):
        bucket = query.get("bucket", "hour")
        if bucket in _MAX_PERIOD:
            window = HistoryFilter(since=since, until=until).window(
                CLOCK, _DEFAULT_PERIOD[bucket])
            assert window.since is not None and window.until is not None
            if window.until - window.since > _MAX_PERIOD[bucket]:
                return False  # a series covers at most so many days per bucket
    return True


def _names_a_kind(description: Any) -> bool:  # noqa: ANN401 - generated JSON
    if not isinstance(description, str):
        return True  # a wrong type is the schema's to refuse
    try:
        kind_key(description)
    except KindNameError:
        return False  # a description must name a kind (the field's description says how)
    return True


def _label_keeps_the_rules(body: Any) -> bool:  # noqa: ANN401 - generated JSON
    if not isinstance(body, dict):
        return True
    if body.get("description") is not None and not _names_a_kind(body["description"]):
        return False
    label, mask = body.get("label"), body.get("mask_rle")
    if label == "description" and (body.get("region_id") is None
                                   or not str(body.get("description") or "").strip()):
        return False  # a description correction names a region and the words
    if (label == "missing_region") != (mask is not None):
        return False  # a drawn mask comes with missing_region, and only with it
    if isinstance(mask, dict):
        height, width = mask.get("size", (0, 0))
        counts = mask.get("counts", [])
        if height > FRAME[0] or width > FRAME[1] or sum(counts) != height * width:
            return False  # the mask fits the frame and its runs cover it exactly
    return True


@schemathesis.hook
def filter_case(_context: schemathesis.HookContext, case: Any) -> bool:  # noqa: ANN401
    meta = case.meta
    if meta is not None and meta.generation.mode == schemathesis.GenerationMode.NEGATIVE:
        return True
    path, method = case.operation.path, case.operation.method.upper()
    if not _query_keeps_the_rules(path, dict(case.query or {})):
        return False
    if method == "POST" and path.endswith("/labels"):
        return _label_keeps_the_rules(case.body)
    if method == "POST" and path.endswith("/region-labels") and isinstance(case.body, dict):
        return _names_a_kind(case.body.get("description"))
    return True


@schemathesis.hook
def map_case(_context: schemathesis.HookContext, case: Any) -> Any:  # noqa: ANN401
    """A positive new alarm rule names a line or camera that has sent frames (the API
    refuses any other, naming the known ones): one of the seeded store's."""
    meta = case.meta
    positive = meta is None or meta.generation.mode != schemathesis.GenerationMode.NEGATIVE
    if (positive and case.operation.method.upper() == "POST"
            and case.operation.path == "/api/v1/alarm-rules" and isinstance(case.body, dict)):
        camera = sorted(CAMERAS)[0]
        case.body["target"] = camera if case.body.get("scope") == "camera" else CAMERAS[camera][0]
    return case
