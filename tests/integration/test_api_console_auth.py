"""Every route added for the console's trends, review queue and alarms: 401 without a
valid token, 403 below its role, and console pages send strangers to sign in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.api_support import assert_error_format
from tests.integration.operator_data import Seeded

pytestmark = pytest.mark.integration
READS = ["/api/v1/aggregates/defect-rate-series", "/api/v1/aggregates/defect-kinds-series",
         "/api/v1/aggregates/score-histogram", "/api/v1/review-queue", "/api/v1/alarms",
         "/api/v1/alarm-rules", "/api/v1/verdicts/1/overlay.png?max_side=64",
         "/api/v1/verdicts.csv", "/metrics"]
RULE = {"name": "r", "scope": "line", "target": "line-1", "max_rate": 0.5,
        "window_minutes": 60}
# (method, path, body, least role)
WRITES = [("POST", "/api/v1/alarms/1/acknowledge", None, "operator"),
          ("POST", "/api/v1/alarm-rules", RULE, "admin"),
          ("PATCH", "/api/v1/alarm-rules/1", {"enabled": False}, "admin")]
BELOW = {"operator": ["viewer"], "admin": ["viewer", "operator"]}
PAGES = ["/trends", "/review", "/alarms"]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token"])
def test_new_reads_need_a_valid_token(client: TestClient, seeded: Seeded, path: str,
                                      header: str | None) -> None:
    r = client.get(path, headers={"Authorization": header} if header else {})
    assert_error_format(r, 401)


@pytest.mark.parametrize("path", READS)
def test_new_reads_serve_viewers(client: TestClient, seeded: Seeded, path: str) -> None:
    r = client.get(path, headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("method", "path", "body", "role"), WRITES)
def test_new_writes_need_a_token_and_their_role(client: TestClient, seeded: Seeded,
                                                method: str, path: str, body: dict | None,
                                                role: str) -> None:
    assert_error_format(client.request(method, path, json=body), 401)
    assert_error_format(client.request(method, path, json=body,
                                       headers={"Authorization": "Bearer nope"}), 401)
    for weaker in BELOW[role]:
        r = client.request(method, path, json=body,
                           headers={"Authorization": f"Bearer {seeded.tokens[weaker]}"})
        assert_error_format(r, 403)


@pytest.mark.parametrize("path", PAGES)
def test_new_pages_send_strangers_to_sign_in(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}"
