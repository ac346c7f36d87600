"""The review queue: exactly the unlabelled verdicts near the threshold or with an unclear
region, oldest first; a label of any kind takes a verdict out."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Verdict
from pipeline.storage.repository import write_verdicts
from tests.integration.operator_data import SPEC, T0, Seeded, Spec, blob_frame, record

pytestmark = pytest.mark.integration
# Far above the threshold, so only its description can queue it.
UNCLEAR = Spec(24, "cam-a", "line-1", "bottle", T0 + timedelta(minutes=235), 0.95,
               "anomalous", ("unclear defect",))


@pytest.fixture(scope="module")
def unclear_id(pg_engine: Engine, seeded: Seeded) -> int:
    _, heat, mask = blob_frame()
    row = record(UNCLEAR, heat, mask)
    with transaction(make_session_factory(pg_engine)) as session:
        assert write_verdicts(session, [row]) == 1
        return session.scalar(select(Verdict.id).where(Verdict.frame_id == row.frame_id))


def expected_queue(specs: list[Spec], fraction: float = 0.10) -> list[int]:
    """The rule, written out over the spec: per product the ceil(fraction * n) closest."""
    near: set[int] = set()
    for product in {s.product for s in specs}:
        mine = [s for s in specs if s.product == product]
        width = sorted(abs(s.score - 0.5) for s in mine)[math.ceil(fraction * len(mine)) - 1]
        near |= {s.index for s in mine if abs(s.score - 0.5) <= width}
    near |= {s.index for s in specs if any(d.startswith("unclear") for d in s.defects)}
    return sorted(near, key=lambda i: (specs[i].captured_at, i))


def _queue(client: TestClient, seeded: Seeded) -> dict:
    r = client.get("/api/v1/review-queue",
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_queue_lists_near_threshold_and_unclear_verdicts_oldest_first(
        client: TestClient, seeded: Seeded, unclear_id: int) -> None:
    specs = [*SPEC, UNCLEAR]
    expected = expected_queue(specs)
    assert expected == [11, 12, 13, 24]  # the rule on this seed, worked by hand too
    ids = {**seeded.verdict_ids, 24: unclear_id}
    q = _queue(client, seeded)
    assert [item["id"] for item in q["items"]] == [ids[i] for i in expected]
    assert q["waiting"] == 4
    assert [item["reason"] for item in q["items"]] == ["near_threshold"] * 3 + ["unclear"]
    assert q["bands"] == {"bottle": pytest.approx(1 / 24, abs=1e-4),
                          "screw": pytest.approx(1 / 24, abs=1e-4)}
    assert q["items"][3]["regions"][0]["description"] == "unclear defect"


def test_a_label_takes_a_verdict_out_of_the_queue(client: TestClient, seeded: Seeded,
                                                  unclear_id: int) -> None:
    before = _queue(client, seeded)
    first, last = before["items"][0], before["items"][-1]
    operator = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    viewer = {"Authorization": f"Bearer {seeded.tokens['viewer']}"}
    url = f"/api/v1/verdicts/{first['id']}/labels"
    assert client.post(url, json={"label": "normal"}, headers=viewer).status_code == 403
    assert client.post(url, json={"label": "normal"}, headers=operator).status_code == 201
    fix = {"label": "description", "region_id": last["regions"][0]["id"],
           "description": "scratch on the neck"}
    assert client.post(f"/api/v1/verdicts/{last['id']}/labels", json=fix,
                       headers=operator).status_code == 201
    after = _queue(client, seeded)
    assert after["waiting"] == before["waiting"] - 2
    assert [i["id"] for i in after["items"]] == [i["id"] for i in before["items"][1:-1]]
    # The band is calibrated on all verdicts, labelled or not: it does not move.
    assert after["bands"] == before["bands"]


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
