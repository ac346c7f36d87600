"""Access control: 401 without a valid token, 403 below the needed role, never data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from pipeline.settings import ApiSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.tokens import create_token, revoke_tokens
from tests.integration.conftest import make_client
from tests.integration.operator_data import Seeded

pytestmark = pytest.mark.integration
READS = ["/api/v1/verdicts", "/api/v1/verdicts/1", "/api/v1/verdicts/1/overlay.png",
         "/api/v1/verdicts/1/masks.png", "/api/v1/verdicts/1/frame", "/api/v1/live",
         "/api/v1/aggregates/defect-rate", "/api/v1/aggregates/trend", "/api/v1/models",
         "/api/v1/verdicts/1/labels"]


@pytest.fixture(scope="module")
def client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    settings = Settings(api=ApiSettings(api_bootstrap_token="bootstrap-admin-secret-123"))
    yield from make_client(settings, pg_engine)


def _assert_no_data(r, status: int) -> None:  # noqa: ANN001 - httpx.Response
    assert r.status_code == status
    assert set(r.json()) == {"error"}  # the error body and nothing else
    assert r.json()["error"]["status"] == status


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-token", "Basic dXNlcjpwYXNz"])
def test_reads_need_a_valid_token(client: TestClient, seeded: Seeded, path: str,
                                  header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get(path, headers=headers)
    _assert_no_data(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"


def test_malformed_params_without_token_are_401_not_422(client: TestClient) -> None:
    _assert_no_data(client.get("/api/v1/verdicts", params={"limit": "x"}), 401)


def test_revoked_token_is_refused(client: TestClient, pg_engine: Engine) -> None:
    with transaction(make_session_factory(pg_engine)) as session:
        _, secret = create_token(session, name="temp", role="admin",
                                 expires_in=timedelta(days=1))
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/live", headers=headers).status_code == 200
    with transaction(make_session_factory(pg_engine)) as session:
        revoke_tokens(session, name="temp")
    _assert_no_data(client.get("/api/v1/live", headers=headers), 401)


def test_viewer_cannot_label_and_operator_cannot_promote(client: TestClient,
                                                         seeded: Seeded) -> None:
    vid = seeded.verdict_ids[20]
    viewer = {"Authorization": f"Bearer {seeded.tokens['viewer']}"}
    operator = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    _assert_no_data(client.post(f"/api/v1/verdicts/{vid}/labels", json={"label": "normal"},
                                headers=viewer), 403)
    _assert_no_data(client.post("/api/v1/models/bottle-v2/promote", headers=operator), 403)
    _assert_no_data(client.post("/api/v1/models/bottle-v2/promote"), 401)
    labels = client.get(f"/api/v1/verdicts/{vid}/labels", headers=viewer).json()
    assert labels == []  # the refused label was not written


def test_admin_promotes_and_bootstrap_token_works(client: TestClient) -> None:
    admin = {"Authorization": "Bearer bootstrap-admin-secret-123"}
    assert client.get("/api/v1/me", headers=admin).json() == {
        "name": "bootstrap-admin", "role": "admin"}
    r = client.post("/api/v1/models/bottle-v2/promote", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "active"
    statuses = {m["version"]: m["status"]
                for m in client.get("/api/v1/models", headers=admin).json()}
    assert statuses == {"bottle-v2": "active", "bottle-v1": "retired", "bottle-v0": "rejected"}
    assert client.post("/api/v1/models/bottle-v0/promote", headers=admin).status_code == 409
    assert client.post("/api/v1/models/nope/promote", headers=admin).status_code == 404


def test_console_pages_redirect_to_login_without_a_session(client: TestClient) -> None:
    for path in ("/", "/history?verdict=anomalous", "/verdicts/1"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    client.cookies.set("clad_token", "forged")
    try:
        assert client.get("/", follow_redirects=False).status_code == 303
    finally:
        client.cookies.clear()


def test_cookie_session_needs_console_header_to_change_things(client: TestClient,
                                                              seeded: Seeded) -> None:
    assert client.post("/console/session", json={"token": "nope"}).status_code == 401
    assert client.post("/console/session",
                       json={"token": seeded.tokens["operator"]}).status_code == 200
    try:
        vid = seeded.verdict_ids[21]
        assert client.get("/history").status_code == 200
        # Without the header a cross-site form post riding on the cookie is refused.
        _assert_no_data(client.post(f"/api/v1/verdicts/{vid}/labels",
                                    json={"label": "normal"}), 403)
        r = client.post(f"/api/v1/verdicts/{vid}/labels", json={"label": "normal"},
                        headers={"X-Clad-Console": "1"})
        assert r.status_code == 201 and r.json()["author"] == "operator-tester"
    finally:
        client.cookies.clear()
