"""Hostile input to the operator API: every request here was a 500 or worse once (issue 19).

Each now gets a 4xx (or a 503 when the database is away) in the API's JSON error
format; the login page never sends a browser to another host; tokens expire; the
OpenAPI document is served only as CLAD_API_DOCS says.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from pipeline.settings import ApiSettings, Settings
from pipeline.storage.database import make_engine
from pipeline.storage.models import ApiToken, OperatorLabel
from tests.integration.api_support import assert_error_format
from tests.integration.conftest import make_client
from tests.integration.operator_data import T0, Seeded
from tests.integration.tcp_proxy import TcpProxy
from workers.api import create_app
from workers.cli import operators as cli_operators
from workers.cli.main import app as cli_app

pytestmark = pytest.mark.integration
BIG = "9223372036854775808"  # 2**63: one past BIGINT


@pytest.fixture(scope="module")
def raw_client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    """Like `client`, but a server error comes back as a response instead of raising."""
    app = create_app(Settings(), pg_engine, clock=lambda: T0 + timedelta(hours=4))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _admin(seeded: Seeded) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded.tokens['admin']}"}


HOSTILE = [
    ("GET", "/api/v1/verdicts?camera=%00"),
    ("GET", "/api/v1/verdicts?line=a%00b"),
    ("GET", "/api/v1/verdicts?product=%00"),
    ("GET", "/api/v1/verdicts?defect=%00"),
    ("GET", "/api/v1/models?product=%00"),
    ("POST", "/api/v1/models/%00/promote"),
    ("GET", "/api/v1/verdicts?since=0001-01-01T00:00:00%2B14:00"),
    ("GET", "/api/v1/verdicts?until=9999-12-31T23:59:59-14:00"),
    ("GET", "/api/v1/aggregates/trend?since=0001-01-01T00:00:00Z"),
    ("GET", "/api/v1/aggregates/trend?until=0001-01-01T00:00:00Z"),
    ("GET", "/api/v1/aggregates/defect-rate?since=0001-01-01T00:00:00Z"),
    ("GET", "/api/v1/aggregates/defect-kinds?until=0001-01-01T00:00:00%2B01:00"),
    ("GET", f"/api/v1/verdicts/{BIG}"),
    ("GET", f"/api/v1/verdicts/{BIG}/overlay.png"),
    ("GET", f"/api/v1/verdicts/{BIG}/masks.png"),
    ("GET", f"/api/v1/verdicts/{BIG}/frame"),
    ("GET", f"/api/v1/verdicts/{BIG}/labels"),
    ("POST", f"/api/v1/verdicts/{BIG}/labels"),
    ("GET", "/api/v1/verdicts/-1"),
    ("GET", "/api/v1/verdicts/1/masks.png?region=99999999999999999999"),
    ("GET", f"/verdicts/{BIG}"),  # the console's page
]


def _cursor(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


CURSORS = [f"2026-11-23T08:00:00+00:00|{BIG}", "2026-11-23T08:00:00+00:00|-5",
           "0001-01-01T00:00:00+14:00|1", "2026-11-23T08:00:00+00:00|1\x00"]


@pytest.mark.parametrize(("method", "url"), HOSTILE)
def test_hostile_request_is_a_4xx_in_the_error_format(raw_client: TestClient, seeded: Seeded,
                                                      method: str, url: str) -> None:
    r = raw_client.request(method, url, headers=_admin(seeded), json={"label": "normal"}
                           if method == "POST" else None)
    if url.startswith("/verdicts/"):  # the console answers a bad path the API's way too
        raw_client.cookies.set("clad_token", seeded.tokens["viewer"])
        try:
            r = raw_client.get(url)
        finally:
            raw_client.cookies.clear()
    assert 400 <= r.status_code < 500, r.text
    assert_error_format(r, 422)


@pytest.mark.parametrize("raw", CURSORS)
def test_out_of_range_cursor_is_422(raw_client: TestClient, seeded: Seeded, raw: str) -> None:
    r = raw_client.get("/api/v1/verdicts", params={"cursor": _cursor(raw)},
                       headers=_admin(seeded))
    assert_error_format(r, 422)
    assert r.json()["error"]["details"][0]["loc"] == "query.cursor"


def test_nul_and_date_errors_name_the_parameter(raw_client: TestClient,
                                                seeded: Seeded) -> None:
    r = raw_client.get("/api/v1/verdicts?camera=%00", headers=_admin(seeded))
    [detail] = r.json()["error"]["details"]
    assert detail["loc"] == "query.camera" and "NUL" in detail["msg"]
    r = raw_client.get("/api/v1/aggregates/trend?since=0001-01-01T00:00:00Z",
                       headers=_admin(seeded))
    [detail] = r.json()["error"]["details"]
    assert detail["loc"] == "query.since" and "1970-01-01" in detail["msg"]


def test_largest_bigint_id_is_a_plain_404(raw_client: TestClient, seeded: Seeded) -> None:
    r = raw_client.get(f"/api/v1/verdicts/{2**63 - 1}", headers=_admin(seeded))
    assert_error_format(r, 404)


def test_dates_at_the_edges_of_the_range_still_work(raw_client: TestClient,
                                                    seeded: Seeded) -> None:
    r = raw_client.get("/api/v1/aggregates/trend", headers=_admin(seeded),
                       params={"since": "1970-01-01T00:00:00Z",
                               "until": "2999-12-31T23:59:59Z"})
    assert r.status_code == 200, r.text
    assert r.json()["current"]["total"] == 24  # every seeded verdict is in the window


def _labels(pg_engine: Engine, verdict_id: int) -> int:
    with Session(pg_engine) as session:
        return len(session.scalars(select(OperatorLabel.id).where(
            OperatorLabel.verdict_id == verdict_id)).all())


@pytest.mark.parametrize(("mask", "field"), [
    ({"size": [-1, -5], "counts": [5]}, "body.mask_rle.size.0"),
    ({"size": [1.5, 2], "counts": [3]}, "body.mask_rle.size.0"),
    ({"size": [1e9, 1e9], "counts": [1]}, "body.mask_rle.size.0"),
    ({"size": [1000000000, 1000000000], "counts": [10**18]}, "body.mask_rle.size.0"),
    ({"size": [0, 4], "counts": []}, "body.mask_rle.size.0"),
    ({"size": [2, 2], "counts": [1.5, 2.5]}, "body.mask_rle.counts.0"),
    ({"size": [2, 2], "counts": [-1, 5]}, "body.mask_rle.counts.0"),
    ({"size": [2, 2], "counts": [True, 3]}, "body.mask_rle.counts.0"),
    ({"size": [2, 2, 2], "counts": [8]}, "body.mask_rle.size"),
    ({"size": [49, 64], "counts": [49 * 64]}, "larger than the frame"),  # frame is 48x64
    ({"size": [1, 2], "counts": [0, 0, 0, 0, 2]}, "more runs"),
])
def test_bad_mask_rle_is_422_and_not_stored(raw_client: TestClient, seeded: Seeded,
                                            pg_engine: Engine, mask: dict[str, Any],
                                            field: str) -> None:
    vid = seeded.verdict_ids[14]
    before = _labels(pg_engine, vid)
    r = raw_client.post(f"/api/v1/verdicts/{vid}/labels", headers=_admin(seeded),
                        json={"label": "missing_region", "mask_rle": mask})
    assert_error_format(r, 422)
    assert field in r.text
    assert _labels(pg_engine, vid) == before


def test_mask_coarser_than_the_frame_is_stored(raw_client: TestClient, seeded: Seeded) -> None:
    vid = seeded.verdict_ids[15]
    mask = {"size": [12, 16], "counts": [100, 20, 72]}
    r = raw_client.post(f"/api/v1/verdicts/{vid}/labels", headers=_admin(seeded),
                        json={"label": "missing_region", "mask_rle": mask})
    assert r.status_code == 201, r.text
    assert r.json()["mask_rle"] == mask


def test_nul_in_a_label_description_is_422(raw_client: TestClient, seeded: Seeded) -> None:
    vid = seeded.verdict_ids[16]
    r = raw_client.post(f"/api/v1/verdicts/{vid}/labels", headers=_admin(seeded),
                        json={"label": "normal", "description": "a\x00b"})
    assert_error_format(r, 422)
    assert "body.description" in r.json()["error"]["message"]


# --- the database goes away -------------------------------------------------------------

def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_database_that_is_not_there_is_a_503(seeded: Seeded) -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing",
                         connect_timeout_s=2)
    try:
        with TestClient(create_app(Settings(), engine), raise_server_exceptions=False) as c:
            c.cookies.set("clad_token", seeded.tokens["viewer"])  # for the console page "/"
            for path in ("/api/v1/live", "/api/v1/verdicts?camera=cam-a", "/api/v1/me", "/"):
                r = c.get(path, headers=_admin(seeded), follow_redirects=False)
                assert_error_format(r, 503)
                assert r.json()["error"]["code"] == "database_unavailable"
                assert r.headers["retry-after"] == "5"
                assert "127.0.0.1" not in r.text  # the driver's message stays in the log
            r = c.post("/api/v1/models/bottle-v2/promote", headers=_admin(seeded))
            assert_error_format(r, 503)
            # The liveness probe of deploy/ does not depend on the database.
            assert c.get("/healthz").json() == {"status": "ok"}
    finally:
        engine.dispose()


def test_database_cut_mid_life_is_a_503_then_recovers(postgres_url: str,
                                                      seeded: Seeded) -> None:
    url = make_engine(postgres_url).url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    engine = make_engine(url.set(port=proxy.port).render_as_string(hide_password=False),
                         connect_timeout_s=2)
    try:
        with TestClient(create_app(Settings(), engine), raise_server_exceptions=False) as c:
            assert c.get("/api/v1/live", headers=_admin(seeded)).status_code == 200
            proxy.cut()
            assert_error_format(c.get("/api/v1/live", headers=_admin(seeded)), 503)
            proxy.restore()
            assert c.get("/api/v1/live", headers=_admin(seeded)).status_code == 200
    finally:
        engine.dispose()
        proxy.close()


# --- the login page's redirect --------------------------------------------------------

def _next_of(page: str) -> str:
    match = re.search(r'data-next="([^"]*)"', page)
    assert match, page[:500]
    return unescape(match.group(1))


@pytest.mark.parametrize("target", [
    "/%5Cevil.example", "/%09/evil.example", "//evil.example", "///evil.example",
    "https://evil.example", "http:/evil.example", "%5C%5Cevil.example", "/%5C/evil.example",
    "/%0A/evil.example", "/%0D/evil.example", "/%7F/evil.example", "evil.example",
    "javascript:alert(1)", "/%00/evil.example", "%2F%2Fevil.example",
])
def test_login_never_redirects_off_the_console(raw_client: TestClient, target: str) -> None:
    r = raw_client.get(f"/login?next={target}")
    assert r.status_code == 200
    assert _next_of(r.text) == "/"


@pytest.mark.parametrize("target", ["/", "/history?verdict=anomalous&camera=cam-a",
                                    "/verdicts/12", "/%5Cpath-on-this-host"])
def test_login_keeps_a_path_on_the_console(raw_client: TestClient, target: str) -> None:
    r = raw_client.get("/login", params={"next": target})
    assert _next_of(r.text) == target


def test_console_login_round_trip_keeps_the_page(raw_client: TestClient) -> None:
    r = raw_client.get("/history?verdict=anomalous", follow_redirects=False)
    assert r.status_code == 303
    page = raw_client.get(r.headers["location"])
    assert _next_of(page.text) == "/history?verdict=anomalous"


# --- tokens expire --------------------------------------------------------------------

def test_expired_token_is_401(pg_engine: Engine, seeded: Seeded) -> None:
    # The seeded tokens are valid for 90 days: a clock 91 days on finds them expired.
    later = datetime.now(UTC) + timedelta(days=91)
    app = create_app(Settings(), pg_engine, clock=lambda: later)
    with TestClient(app) as c:
        r = c.get("/api/v1/me", headers=_admin(seeded))
        assert_error_format(r, 401)
        assert "expired" in r.json()["error"]["message"]
        assert c.post("/console/session", json={"token": seeded.tokens["admin"]}
                      ).status_code == 401
        c.cookies.set("clad_token", seeded.tokens["viewer"])
        assert c.get("/", follow_redirects=False).status_code == 303  # back to login


def test_bootstrap_token_gets_the_configured_lifetime(pg_engine: Engine,
                                                      seeded: Seeded) -> None:
    secret = "bootstrap-secret-with-expiry-42"
    settings = Settings(api=ApiSettings(api_bootstrap_token=secret, api_token_days=7))
    before = datetime.now(UTC)
    for _ in make_client(settings, pg_engine):
        pass
    with Session(pg_engine) as session:
        row = session.scalars(select(ApiToken).where(ApiToken.name == "bootstrap-admin")
                              .order_by(ApiToken.id.desc())).first()
    assert row is not None
    assert before + timedelta(days=7) <= row.expires_at <= datetime.now(UTC) + timedelta(days=7)


def _cli(postgres_url: str, *args: str, extra_env: dict[str, str] | None = None) -> Result:
    # In process: a `clad` subprocess spends ~10 s importing torch for other commands.
    cli_operators.register(cli_app)
    env = {"CLAD_DATABASE_URL": postgres_url, **(extra_env or {})}
    return CliRunner().invoke(cli_app, list(args), env=env)


def test_cli_token_create_sets_the_expiry(postgres_url: str, pg_engine: Engine,
                                          seeded: Seeded) -> None:
    start = datetime.now(UTC)
    made = _cli(postgres_url, "token", "create", "short-lived", "--expires-days", "3")
    assert made.exit_code == 0, made.output
    default = _cli(postgres_url, "token", "create", "default-lived",
                   extra_env={"CLAD_API_TOKEN_DAYS": "45"})
    assert default.exit_code == 0, default.output
    assert _cli(postgres_url, "token", "create", "x", "--expires-days", "0").exit_code == 2
    with Session(pg_engine) as session:
        expiry = dict(session.execute(select(ApiToken.name, ApiToken.expires_at).where(
            ApiToken.name.in_(["short-lived", "default-lived", "x"]))).all())
    assert set(expiry) == {"short-lived", "default-lived"}
    end = datetime.now(UTC)
    for name, days in (("short-lived", 3), ("default-lived", 45)):
        assert start + timedelta(days=days) <= expiry[name] <= end + timedelta(days=days)
    listed = _cli(postgres_url, "token", "list")
    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.output.splitlines() if "\tshort-lived\t" in x)
    assert line.endswith(f"active\texpires {expiry['short-lived']:%Y-%m-%d}")


# --- /docs and /openapi.json ----------------------------------------------------------

@pytest.mark.parametrize("mode", ["off", "viewer", "public"])
def test_docs_follow_the_setting(pg_engine: Engine, seeded: Seeded, mode: str) -> None:
    settings = Settings(api=ApiSettings(api_docs=mode))
    viewer = {"Authorization": f"Bearer {seeded.tokens['viewer']}"}
    for c in make_client(settings, pg_engine):
        anonymous, with_token = c.get("/openapi.json"), c.get("/openapi.json", headers=viewer)
        docs = c.get("/docs")
        c.cookies.set("clad_token", seeded.tokens["viewer"])
        console_links_docs = 'href="/docs"' in c.get("/").text
        c.cookies.clear()
        assert console_links_docs == (mode != "off")
        if mode == "off":
            assert_error_format(anonymous, 404)
            assert_error_format(with_token, 404)
            assert_error_format(docs, 404)
            assert_error_format(c.get("/redoc"), 404)
            continue
        assert docs.status_code == 200 and "/openapi.json" in docs.text
        assert "/api/v1/verdicts" in with_token.json()["paths"]
        if mode == "viewer":
            assert_error_format(anonymous, 401)
            c.cookies.set("clad_token", seeded.tokens["viewer"])  # /docs in a signed-in browser
            assert c.get("/openapi.json").json() == with_token.json()
            c.cookies.clear()
        else:
            assert anonymous.json() == with_token.json()


def _app_with_a_bug(pg_engine: Engine) -> FastAPI:
    app = create_app(Settings(), pg_engine)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    return app


def test_unforeseen_error_is_a_json_500_without_its_message(pg_engine: Engine) -> None:
    with TestClient(_app_with_a_bug(pg_engine), raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert_error_format(r, 500)
    assert r.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in r.text


def test_a_500_keeps_the_connection_open_under_uvicorn(pg_engine: Engine,
                                                        seeded: Seeded) -> None:
    # The fault report: after a 500 uvicorn dropped the connection, so the client's
    # next request on it failed too.
    server = uvicorn.Server(uvicorn.Config(_app_with_a_bug(pg_engine), host="127.0.0.1",
                                           port=_closed_port(), log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started
        conn = http.client.HTTPConnection("127.0.0.1", server.config.port, timeout=10)
        conn.request("GET", "/boom")
        first = conn.getresponse()
        assert first.status == 500 and json.loads(first.read())["error"]["status"] == 500
        sock = conn.sock
        conn.request("GET", "/api/v1/me", headers=_admin(seeded))
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["role"] == "admin"
        assert conn.sock is sock  # the same connection answered both
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_commit_that_fails_is_not_reported_as_stored(pg_engine: Engine, seeded: Seeded,
                                                       ) -> None:
    app = create_app(Settings(), pg_engine)

    def connection_lost(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    event.listen(app.state.sessions, "before_commit", connection_lost)
    vid = seeded.verdict_ids[17]
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post(f"/api/v1/verdicts/{vid}/labels", json={"label": "normal"},
                   headers=_admin(seeded))
    assert_error_format(r, 503)
    assert _labels(pg_engine, vid) == 0


def test_a_number_is_not_an_instant_and_405_lists_every_method(raw_client: TestClient,
                                                               seeded: Seeded) -> None:
    """Found by schemathesis: until=0.5 was read as a Unix time, and OPTIONS on
    /alarm-rules answered `Allow: GET` (Starlette names only the first route)."""
    for value in ("0.5", "1700000000", "1e9"):
        r = raw_client.get("/api/v1/aggregates/trend", params={"until": value},
                           headers=_admin(seeded))
        assert_error_format(r, 422)
    r = raw_client.request("OPTIONS", "/api/v1/alarm-rules", headers=_admin(seeded))
    assert_error_format(r, 405)
    assert r.headers["allow"] == "GET, POST"
    r = raw_client.delete("/api/v1/alarm-rules/1", headers=_admin(seeded))
    assert r.status_code == 405 and r.headers["allow"] == "PATCH"


def test_the_document_lists_every_error_an_operation_answers(raw_client: TestClient) -> None:
    app = raw_client.app
    doc = app.openapi()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operations = {(m, p): op for p, ops in doc["paths"].items() for m, op in ops.items()}
    for operation in operations.values():
        assert {"401", "403", "422", "503"} <= set(operation["responses"])
        assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"}
    assert {"404", "409"} <= set(operations["post", "/api/v1/models/{version}/promote"]
                                 ["responses"])
    assert "404" in operations["get", "/api/v1/verdicts/{verdict_id}"]["responses"]
    since = next(p for p in operations["get", "/api/v1/verdicts"]["parameters"]
                 if p["name"] == "since")
    assert since["schema"]["anyOf"][0]["pattern"].startswith("^(19[7-9][0-9]|2[0-9]{3})")
