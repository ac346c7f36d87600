"""Alarm routes and console banner: admins configure, the API evaluates, operators
acknowledge (who and when stored), viewers only see."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from pipeline.settings import AlarmSettings, KafkaSettings, Settings
from tests.integration.api_support import assert_error_format
from tests.integration.conftest import make_client
from tests.integration.operator_data import T0, Seeded

pytestmark = pytest.mark.integration
RULE = {"name": "line-1 over half", "scope": "line", "target": "line-1", "max_rate": 0.5,
        "window_minutes": 60, "min_verdicts": 3}


def _auth(seeded: Seeded, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded.tokens[role]}"}


def _page(client: TestClient, seeded: Seeded, role: str, path: str = "/") -> str:
    client.cookies.set("clad_token", seeded.tokens[role])
    try:
        r = client.get(path)
    finally:
        client.cookies.clear()
    assert r.status_code == 200
    return r.text


def test_configure_evaluate_show_acknowledge_clear(client: TestClient, seeded: Seeded) -> None:
    for role in ("viewer", "operator"):
        assert_error_format(client.post("/api/v1/alarm-rules", json=RULE,
                                        headers=_auth(seeded, role)), 403)
    r = client.post("/api/v1/alarm-rules", json=RULE, headers=_auth(seeded, "admin"))
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["created_by"] == "admin-tester" and rule["enabled"] is True
    assert_error_format(client.post("/api/v1/alarm-rules", json=RULE,
                                    headers=_auth(seeded, "admin")), 409)
    assert_error_format(client.post("/api/v1/alarm-rules", json={**RULE, "name": "x",
                                                                 "max_rate": 1.5},
                                    headers=_auth(seeded, "admin")), 422)
    assert [x["id"] for x in client.get("/api/v1/alarm-rules",
                                        headers=_auth(seeded, "viewer")).json()] == [rule["id"]]
    assert "id=\"alarm-banner\"" not in _page(client, seeded, "viewer")

    assert client.app.state.alarms.run_once() == 1  # 11:00-12:00 on line-1: 4 of 4
    active = client.get("/api/v1/alarms", headers=_auth(seeded, "viewer")).json()
    assert [(a["rule"], a["total"], a["anomalous"], a["rate"]) for a in active] == [
        ("line-1 over half", 4, 4, 1.0)]
    alarm_id = active[0]["id"]
    viewer_page = _page(client, seeded, "viewer")
    assert f'data-alarm="{alarm_id}"' in viewer_page and "data-ack=" not in viewer_page
    assert f'data-ack="{alarm_id}"' in _page(client, seeded, "operator", "/history")

    url = f"/api/v1/alarms/{alarm_id}/acknowledge"
    assert_error_format(client.post(url, headers=_auth(seeded, "viewer")), 403)
    r = client.post(url, headers=_auth(seeded, "operator"))
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_by"] == "operator-tester"
    assert r.json()["acknowledged_at"].startswith((T0 + timedelta(hours=4)).isoformat()[:19])
    assert_error_format(client.post(url, headers=_auth(seeded, "operator")), 409)
    assert_error_format(client.post("/api/v1/alarms/999999/acknowledge",
                                    headers=_auth(seeded, "operator")), 404)
    assert client.get("/api/v1/alarms", headers=_auth(seeded, "viewer")).json() == []
    opened = client.get("/api/v1/alarms", params={"state": "open"},
                        headers=_auth(seeded, "viewer")).json()
    assert [a["id"] for a in opened] == [alarm_id]
    assert 'id="alarm-banner"' not in _page(client, seeded, "operator")
    assert "operator-tester" in _page(client, seeded, "viewer", "/alarms")
    assert client.app.state.alarms.run_once() == 0  # acknowledged, still open: no repeat

    r = client.patch(f"/api/v1/alarm-rules/{rule['id']}", json={"enabled": False},
                     headers=_auth(seeded, "admin"))
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert_error_format(client.patch(f"/api/v1/alarm-rules/{rule['id']}",
                                     json={"enabled": True},
                                     headers=_auth(seeded, "operator")), 403)
    assert client.app.state.alarms.run_once() == 0
    assert client.get("/api/v1/alarms", params={"state": "open"},
                      headers=_auth(seeded, "viewer")).json() == []

    metrics = client.get("/metrics", headers=_auth(seeded, "viewer"))
    assert metrics.status_code == 200
    assert 'clad_alarms_raised_total{scope="line",target="line-1"} 1.0' in metrics.text
    assert "clad_alarms_open 0.0" in metrics.text


def test_a_rule_for_a_line_or_camera_that_never_sent_a_frame_is_refused(
        client: TestClient, seeded: Seeded) -> None:
    admin = _auth(seeded, "admin")
    r = client.post("/api/v1/alarm-rules", headers=admin,
                    json={**RULE, "name": "typo", "target": "line-01"})
    assert_error_format(r, 422)
    message = r.json()["error"]["message"]
    assert "no line 'line-01' has sent a frame" in message and "line-1, line-2" in message
    r = client.post("/api/v1/alarm-rules", headers=admin,
                    json={**RULE, "name": "a line is no camera", "scope": "camera"})
    assert_error_format(r, 422)
    assert "known cameras: cam-a, cam-b" in r.json()["error"]["message"]
    names = [x["name"] for x in client.get("/api/v1/alarm-rules", headers=admin).json()]
    assert "typo" not in names and "a line is no camera" not in names
    r = client.post("/api/v1/alarm-rules", headers=admin,
                    json={**RULE, "name": "cam-a rule", "scope": "camera", "target": "cam-a"})
    assert r.status_code == 201, r.text


def test_the_alarms_page_says_where_alarms_go(pg_engine: Engine, seeded: Seeded) -> None:
    """Embedded broker (the client fixture's settings): nowhere, and the page says so;
    with a broker: its topic and address."""
    settings = Settings(alarms=AlarmSettings(alarm_interval_s=0))
    brokered = settings.model_copy(update={"kafka": KafkaSettings(
        bootstrap_servers="kafka-1:9092"), "alarms": AlarmSettings(alarm_interval_s=0,
                                                                   alarm_topic="line-alarms")})
    for current, expected in ((settings, "not sent anywhere: no Kafka broker is configured"),
                              (brokered, "sent once to the Kafka topic 'line-alarms' on "
                                         "kafka-1:9092")):
        for client in make_client(current, pg_engine):
            page = _page(client, seeded, "viewer", "/alarms")
            assert expected in unescape(page), page
