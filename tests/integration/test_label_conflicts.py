"""Label conflicts through the API: a label overturning another author's is recorded,
listed apart from the review queue, and settled by the next person's label."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.operator_data import Seeded

pytestmark = pytest.mark.integration


def _as(seeded: Seeded, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded.tokens[role]}"}


def _label(client: TestClient, seeded: Seeded, role: str, vid: int, label: str) -> None:
    r = client.post(f"/api/v1/verdicts/{vid}/labels", json={"label": label},
                    headers=_as(seeded, role))
    assert r.status_code == 201, r.text


def _conflicts(client: TestClient, seeded: Seeded, **params: str) -> dict:
    r = client.get("/api/v1/review-queue/conflicts", params=params,
                   headers=_as(seeded, "viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_overturning_another_authors_label_is_a_conflict_until_someone_else_labels(
        client: TestClient, seeded: Seeded) -> None:
    vid, agreed, own = seeded.verdict_ids[2], seeded.verdict_ids[3], seeded.verdict_ids[4]
    before = _conflicts(client, seeded)["open"]
    _label(client, seeded, "operator", vid, "anomalous")
    _label(client, seeded, "admin", vid, "normal")  # overturns the operator's word
    _label(client, seeded, "operator", agreed, "anomalous")
    _label(client, seeded, "admin", agreed, "anomalous")  # agrees: no conflict
    _label(client, seeded, "operator", own, "anomalous")
    _label(client, seeded, "operator", own, "normal")  # one person changing their mind
    listed = _conflicts(client, seeded)
    assert listed["open"] == before + 1
    (conflict,) = [c for c in listed["items"] if c["verdict_id"] in (vid, agreed, own)]
    assert conflict["verdict_id"] == vid
    assert (conflict["label"], conflict["author"]) == ("normal", "admin-tester")
    assert (conflict["previous_label"], conflict["previous_author"]) == ("anomalous",
                                                                         "operator-tester")
    assert _conflicts(client, seeded, product="no-such-product") == {"open": 0, "items": []}
    # the latest word still wins where every page reads it
    assert client.get(f"/api/v1/verdicts/{vid}", headers=_as(seeded, "viewer")
                      ).json()["operator_label"] == "normal"
    # the conflict's author insisting does not settle it ...
    _label(client, seeded, "admin", vid, "normal")
    assert _conflicts(client, seeded)["open"] == before + 1
    # ... someone else looking again does
    _label(client, seeded, "operator", vid, "normal")
    assert _conflicts(client, seeded)["open"] == before


def test_review_page_lists_conflicts_apart(client: TestClient, seeded: Seeded) -> None:
    vid = seeded.verdict_ids[5]
    _label(client, seeded, "operator", vid, "normal")
    _label(client, seeded, "admin", vid, "anomalous")
    client.cookies.set("clad_token", seeded.tokens["viewer"])
    try:
        page = client.get("/review")
    finally:
        client.cookies.clear()
    assert page.status_code == 200
    assert 'id="label-conflicts"' in page.text
    assert f'data-conflict-verdict="{vid}"' in page.text
