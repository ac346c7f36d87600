"""Fuzz every route of the operator API: whatever comes in, no 500, and errors keep one shape.

The routes come from the app's own OpenAPI document (plus the console's pages,
which it leaves out), so a new route is fuzzed without touching this file.
Each parameter gets a mix of hostile values (NUL bytes, ids past BIGINT, dates
at datetime's limits, huge and odd numbers, unicode, long strings), random text
and values that are valid for the seeded store, so requests reach the queries
and not only the validation. Examples are bounded to keep the run under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from pipeline.settings import Settings
from tests.integration.api_support import assert_error_format
from tests.integration.operator_data import T0, Seeded
from workers.api import create_app

pytestmark = pytest.mark.integration
EXAMPLES = 40  # per route and method: ~17 routes, ~700 requests

HOSTILE_TEXT = [
    "", " ", "\x00", "a\x00b", "%00", "\\", "/", "..", "../../etc/passwd", "\t\n\r", "\x7f",
    "ü", "😀", "\u202e", "\ufeff", "x" * 5000, "null", "[]", "{}", "'; DROP TABLE verdicts;--",
    "1e309", "-0", "NaN", "Infinity", "-inf", "0x10", "1_000", "9" * 400,
    str(2**63 - 1), str(2**63), str(-(2**63) - 1), str(2**64), "-1", "0", "1.5",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31",
    "9999-12-31T23:59:59.999999Z", "2026-02-30T00:00:00", "2026-11-23T08:00:00Z",
    "1970-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "3000-01-01T00:00:00Z",
    "10000-01-01T00:00:00", "2026-11-23T08:00:00+24:00", "T", "--",
]
# The console's pages are not in the OpenAPI document: (method, path, query names, body).
CONSOLE_ROUTES = [
    ("get", "/", [], None),
    ("get", "/history", ["line", "camera", "product", "since", "until", "verdict", "defect",
                         "min_score", "max_score", "min_relative", "max_relative", "operator",
                         "cursor", "limit"], None),
    ("get", "/verdicts/{verdict_id}", [], None),
    ("get", "/login", ["next"], None),
    ("post", "/console/session", [], "login"),
    ("post", "/console/logout", [], None),
    ("get", "/healthz", [], None),
    ("get", "/trends", ["line", "camera", "product", "since", "until", "by", "bucket"], None),
    ("get", "/review", ["limit", "cursor"], None),
    ("get", "/console/live", [], None),
    ("get", "/alarms", [], None),
]


def _app(pg_engine: Engine) -> Any:  # noqa: ANN401 - FastAPI
    return create_app(Settings(), pg_engine, clock=lambda: T0 + timedelta(hours=4))


def _routes() -> list[tuple[str, str, list[str], str | None]]:
    from sqlalchemy import create_engine

    # Only the document is read here: an engine that is never connected.
    document = create_app(Settings(), create_engine("sqlite://")).openapi()
    routes = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            body = None
            if "requestBody" in operation:
                body = ("rule" if path.startswith("/api/v1/alarm-rules") else
                        "regions" if path == "/api/v1/region-labels" else "label")
            routes.append((method, path, query, body))
    return routes + CONSOLE_ROUTES


ROUTES = _routes()


@pytest.fixture(scope="module")
def fuzz_client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    # A server error must come back as a response (to be reported), not raise here.
    with TestClient(_app(pg_engine), raise_server_exceptions=False) as c:
        yield c


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers().map(str),
        st.integers(min_value=2**62, max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )


def _dates() -> st.SearchStrategy[str]:
    zones = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
        lambda m: timezone(timedelta(minutes=m)))
    return st.one_of(
        st.datetimes().map(datetime.isoformat),
        st.datetimes(timezones=zones).map(datetime.isoformat),
        st.datetimes(min_value=datetime(2026, 11, 22), max_value=datetime(2026, 11, 24),
                     timezones=st.just(UTC)).map(datetime.isoformat),
    )


def _valid_for_seed(name: str, seeded: Seeded) -> st.SearchStrategy[str]:
    ids = [str(v) for v in seeded.verdict_ids.values()]
    known = {
        "verdict_id": st.sampled_from(ids), "line": st.sampled_from(["line-1", "line-2"]),
        "camera": st.sampled_from(["cam-a", "cam-b", "cam-c"]),
        "product": st.sampled_from(["bottle", "screw"]),
        "verdict": st.sampled_from(["normal", "anomalous"]),
        "defect": st.sampled_from(["scratch on the neck", "contamination"]),
        "version": st.sampled_from(["bottle-v1", "bottle-v0", "nope"]),
        "by": st.sampled_from(["hour", "camera", "line", "product"]),
        "limit": st.integers(1, 500).map(str), "top": st.integers(1, 100).map(str),
        "region": st.integers(0, 3).map(str),
        "min_score": st.floats(0, 1).map(repr), "max_score": st.floats(0, 1).map(repr),
        "next": st.sampled_from(["/", "/history", "//evil.example", "/\\evil.example"]),
        "bucket": st.sampled_from(["hour", "shift", "day", "week"]),
        "bins": st.integers(1, 200).map(str), "max_side": st.integers(16, 4096).map(str),
        "state": st.sampled_from(["active", "open", "all"]),
        "alarm_id": st.integers(1, 5).map(str), "rule_id": st.integers(1, 5).map(str),
        "region_id": st.integers(1, 40).map(str),
        "operator": st.sampled_from(["none", "any", "normal", "anomalous", "described",
                                     "overruled"]),
        "min_relative": st.floats(0, 3).map(repr), "max_relative": st.floats(0, 3).map(repr),
        "min_similarity": st.floats(0, 1).map(repr),
    }
    return known.get(name, _dates() if name in ("since", "until") else st.text(max_size=20))


def _with_nul() -> st.SearchStrategy[str]:
    return st.tuples(st.text(max_size=10), st.text(max_size=10)).map(
        lambda parts: f"{parts[0]}\x00{parts[1]}")


def _past_bigint() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(2**63 - 2, 2**70), st.integers(-(2**70), -1)).map(str)


def _edge_dates() -> st.SearchStrategy[str]:
    # Near datetime's own limits, with offsets that push them over when converted.
    zones = st.sampled_from([timezone(timedelta(hours=h)) for h in (-14, -1, 1, 14)])
    low = st.datetimes(max_value=datetime(1, 1, 3), timezones=zones)
    high = st.datetimes(min_value=datetime(9999, 12, 29), timezones=zones)
    return st.one_of(low, high).map(datetime.isoformat)


def _value(name: str, seeded: Seeded) -> st.SearchStrategy[str]:
    # Hostile kinds each get a branch of their own, so every example has a fair chance
    # of carrying one into whichever parameter it fills.
    return st.one_of(_with_nul(), _past_bigint(), _edge_dates(), st.sampled_from(HOSTILE_TEXT),
                     st.text(max_size=300), _numbers(), _dates(),
                     _valid_for_seed(name, seeded))


def _json() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**63, 2**80),
                       st.floats(), st.text(max_size=50), st.sampled_from(HOSTILE_TEXT))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                        max_leaves=20)


def _mask() -> st.SearchStrategy[Any]:
    side = st.one_of(st.integers(1, 64), st.integers(), st.floats(), st.sampled_from(
        [0, -1, 1e9, 10**18, "4", None, True]))

    def exact(size: tuple[int, int]) -> dict[str, Any]:
        # A mask whose runs do cover it, so the request can get past the checks.
        h, w = size
        return {"size": [h, w], "counts": [h * w // 2, h * w - h * w // 2]}

    return st.one_of(
        st.tuples(st.integers(1, 48), st.integers(1, 64)).map(exact),
        st.fixed_dictionaries({"size": st.lists(side, max_size=3),
                               "counts": st.lists(st.one_of(st.integers(), st.floats()),
                                                  max_size=5)}),
        _json(),
    )


def _body(kind: str | None, seeded: Seeded) -> st.SearchStrategy[Any]:
    if kind == "login":
        token = st.one_of(st.sampled_from(list(seeded.tokens.values())),
                          st.sampled_from(HOSTILE_TEXT), st.text())
        text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=1200), _json())
        return st.one_of(st.fixed_dictionaries({"token": token}),
                         st.fixed_dictionaries({"username": text, "password": text}), _json())
    if kind == "regions":
        ids = st.one_of(st.integers(1, 40), st.integers(), st.integers(2**63, 2**70), _json())
        return st.one_of(st.fixed_dictionaries({
            "region_ids": st.one_of(st.lists(ids, max_size=300), _json()),
            "description": st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(), _json())}),
            _json())
    if kind == "label":
        label = st.one_of(st.sampled_from(["anomalous", "normal", "description",
                                           "missing_region"]), _json())
        fields = {"region_id": st.one_of(st.integers(), st.integers(2**63, 2**70), _json()),
                  "description": st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(), _json()),
                  "mask_rle": _mask()}
        return st.one_of(st.fixed_dictionaries({"label": label}, optional=fields), _json())
    if kind == "rule":
        fields = {"name": st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=120)),
                  "scope": st.one_of(st.sampled_from(["line", "camera"]), _json()),
                  "target": st.one_of(st.sampled_from(["line-1", "cam-c"]), st.text()),
                  "max_rate": st.one_of(st.floats(), st.integers(), _json()),
                  "window_minutes": st.one_of(st.integers(), st.floats(), _json()),
                  "min_verdicts": st.one_of(st.integers(), _json()),
                  "enabled": st.one_of(st.booleans(), _json())}
        return st.one_of(st.fixed_dictionaries({}, optional=fields), _json())
    return st.none()


@pytest.mark.parametrize(("method", "path", "query", "body"), ROUTES,
                         ids=[f"{m.upper()} {p}" for m, p, _, _ in ROUTES])
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_no_input_gives_a_500(fuzz_client: TestClient, seeded: Seeded, method: str,
                              path: str, query: list[str], body: str | None,
                              data: st.DataObject) -> None:
    url = path
    for name in ("verdict_id", "version", "alarm_id", "rule_id"):
        if "{" + name + "}" in url:
            value = data.draw(_value(name, seeded), label=name)
            url = url.replace("{" + name + "}", quote(value, safe=""))
    params = {name: data.draw(_value(name, seeded), label=name)
              for name in data.draw(st.lists(st.sampled_from(query), unique=True), label="q")
              } if query else {}
    # Mostly the admin, so that most requests get past the role checks to the queries.
    others = st.sampled_from([seeded.tokens["viewer"], seeded.tokens["operator"], None,
                              "x" * 300])
    token = data.draw(st.one_of(st.just(seeded.tokens["admin"]), others), label="token")
    fuzz_client.cookies.clear()
    headers = {}
    if token and data.draw(st.booleans(), label="as console cookie"):
        # The console's pages read the cookie; state changes also need the console header.
        fuzz_client.cookies.set("clad_token", token)
        headers = {"X-Clad-Console": "1"}
    elif token:
        headers = {"Authorization": f"Bearer {token}"}
    request: dict[str, Any] = {"params": params, "headers": headers}
    if body is not None:
        payload = data.draw(_body(body, seeded), label="body")
        # json.dumps writes NaN and Infinity, which Python's JSON reader accepts.
        request["content"] = json.dumps(payload)
        request["headers"] = {**headers, "Content-Type": "application/json"}
    r = fuzz_client.request(method.upper(), url, follow_redirects=False, **request)
    assert r.status_code < 500, f"{method.upper()} {r.request.url}: {r.status_code} {r.text}"
    if r.status_code >= 400:
        assert_error_format(r)


def test_the_route_table_is_real(fuzz_client: TestClient, seeded: Seeded) -> None:
    # ROUTES is read from the document, so check that it lists the API, and that each
    # console page named by hand still exists (a renamed one would go unfuzzed).
    assert len(ROUTES) - len(CONSOLE_ROUTES) >= 14
    some_id = str(seeded.verdict_ids[0])
    for method, path, _, _ in CONSOLE_ROUTES:
        r = fuzz_client.request(method.upper(), path.replace("{verdict_id}", some_id),
                                follow_redirects=False)
        assert r.status_code not in (404, 405), (method, path)
