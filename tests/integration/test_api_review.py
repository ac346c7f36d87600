"""The review queue: per product and hour, the unlabelled verdicts closest to the threshold
and as many with an unclear region, newest first and paged; a label of any kind takes a
verdict out and pulls no other in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from pipeline.settings import AlarmSettings, ReviewSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Verdict
from pipeline.storage.repository import write_verdicts
from tests.integration.conftest import make_client
from tests.integration.operator_data import SPEC, T0, Seeded, Spec, blob_frame, record

pytestmark = pytest.mark.integration
# Far above the threshold, so only its unclear region can queue it.
UNCLEAR = Spec(24, "cam-a", "line-1", "bottle", T0 + timedelta(minutes=235), 0.95,
               "anomalous", ("unclear defect",))
PER_HOUR = 1


@pytest.fixture(scope="module")
def client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    settings = Settings(alarms=AlarmSettings(alarm_interval_s=0),
                        review=ReviewSettings(review_per_hour=PER_HOUR))
    yield from make_client(settings, pg_engine)


@pytest.fixture(scope="module")
def unclear_id(pg_engine: Engine, seeded: Seeded) -> int:
    _, heat, mask = blob_frame()
    row = record(UNCLEAR, heat, mask)
    with transaction(make_session_factory(pg_engine)) as session:
        assert write_verdicts(session, [row]) == 1
        return session.scalar(select(Verdict.id).where(Verdict.frame_id == row.frame_id))


def expected_queue(specs: list[Spec], per_hour: int = PER_HOUR) -> list[int]:
    """The rule, written out over the spec: per product and hour the `per_hour` closest to
    the threshold (0.5), and the `per_hour` closest of those with an unclear region;
    newest first."""
    def distance(s: Spec) -> tuple[float, int]:
        return abs(s.score - 0.5) / 0.5, s.index

    queued: set[int] = set()
    for key in {(s.product, s.captured_at.replace(minute=0)) for s in specs}:
        mine = sorted((s for s in specs if (s.product, s.captured_at.replace(minute=0)) == key),
                      key=distance)
        unclear = [s for s in mine if any(d.startswith("unclear") for d in s.defects)]
        queued |= {s.index for s in mine[:per_hour] + unclear[:per_hour]}
    return sorted(queued, key=lambda i: (specs[i].captured_at, i), reverse=True)


def _queue(client: TestClient, seeded: Seeded, **params: object) -> dict:
    r = client.get("/api/v1/review-queue", params=params,
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_queue_lists_per_product_and_hour_the_closest_and_unclear_newest_first(
        client: TestClient, seeded: Seeded, unclear_id: int) -> None:
    specs = [*SPEC, UNCLEAR]
    expected = expected_queue(specs)
    # Worked by hand: bottle (cams a, b) and screw (cam c), one of each per hour.
    assert expected == [24, 20, 18, 14, 12, 11, 10, 5, 4]
    ids = {**seeded.verdict_ids, 24: unclear_id}
    q = _queue(client, seeded)
    assert [item["id"] for item in q["items"]] == [ids[i] for i in expected]
    assert q["waiting"] == 9 and q["per_hour"] == PER_HOUR and q["next_cursor"] is None
    assert [item["reason"] for item in q["items"]] == ["unclear"] + ["near_threshold"] * 8
    assert q["items"][0]["regions"][0]["description"] == "unclear defect"
    # Bounded by the rule, not by production: 2 lanes x 2 products x 4 hours at most.
    assert q["waiting"] <= 2 * PER_HOUR * 2 * 4


def test_queue_pages_newest_first(client: TestClient, seeded: Seeded, unclear_id: int) -> None:
    whole = [i["id"] for i in _queue(client, seeded)["items"]]
    first = _queue(client, seeded, limit=4)
    second = _queue(client, seeded, limit=4, cursor=first["next_cursor"])
    third = _queue(client, seeded, limit=4, cursor=second["next_cursor"])
    pages = [first, second, third]
    assert [len(p["items"]) for p in pages] == [4, 4, 1] and third["next_cursor"] is None
    assert [i["id"] for p in pages for i in p["items"]] == whole
    assert {p["waiting"] for p in pages} == {9}


def test_a_label_takes_a_verdict_out_of_the_queue_and_pulls_none_in(
        client: TestClient, seeded: Seeded, unclear_id: int) -> None:
    before = _queue(client, seeded)
    first, last = before["items"][0], before["items"][-1]
    operator = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    viewer = {"Authorization": f"Bearer {seeded.tokens['viewer']}"}
    url = f"/api/v1/verdicts/{last['id']}/labels"
    assert client.post(url, json={"label": "normal"}, headers=viewer).status_code == 403
    assert client.post(url, json={"label": "normal"}, headers=operator).status_code == 201
    fix = {"label": "description", "region_id": first["regions"][0]["id"],
           "description": "scratch on the neck"}
    assert client.post(f"/api/v1/verdicts/{first['id']}/labels", json=fix,
                       headers=operator).status_code == 201
    after = _queue(client, seeded)
    # The ranks count labelled verdicts too: the next closest of those hours stays out.
    assert after["waiting"] == before["waiting"] - 2
    assert [i["id"] for i in after["items"]] == [i["id"] for i in before["items"][1:-1]]


def test_review_page_shows_the_count_and_keys_only_to_labellers(
        client: TestClient, seeded: Seeded) -> None:
    waiting = _queue(client, seeded)["waiting"]
    for role, keys in (("viewer", False), ("operator", True)):
        client.cookies.set("clad_token", seeded.tokens[role])
        try:
            r = client.get("/review")
        finally:
            client.cookies.clear()
        assert r.status_code == 200
        assert f'<span id="review-waiting">{waiting}</span> waiting' in r.text
        assert ('data-key="a"' in r.text) is keys
