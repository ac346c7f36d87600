"""The console for a shift, through the HTTP API on real Postgres: a correction shows
everywhere (issue 29 item 3), alike regions are named as a group (issue 29 item 5),
scores read relative to their product's threshold, and the latest label wins."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from pipeline.settings import AlarmSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import OperatorLabel, Region
from tests.integration.conftest import make_client
from tests.integration.operator_data import truncate
from tests.integration.shift_data import (
    ALIKE,
    DESCRIBER,
    SHIFT,
    THRESHOLD,
    SeededShift,
    alike_indices,
    seed_shift,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shift(pg_engine: Engine) -> Iterator[SeededShift]:
    data = seed_shift(pg_engine)
    yield data
    truncate(pg_engine)


@pytest.fixture(scope="module")
def client(pg_engine: Engine, shift: SeededShift) -> Iterator[TestClient]:
    yield from make_client(Settings(alarms=AlarmSettings(alarm_interval_s=0)), pg_engine)


def _auth(shift: SeededShift, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {shift.tokens[role]}"}


def _get(client: TestClient, shift: SeededShift, url: str, **params: object) -> object:
    r = client.get(url, params=params, headers=_auth(shift, "viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def _first_of_kind(kind: str, product: str = "bottle") -> int:
    return next(s.index for s in SHIFT if s.product == product and s.regions
                and s.regions[0].kind == kind and s.regions[0].text != "a scratch or a cut")


def _describe(client: TestClient, shift: SeededShift, i: int, text: str,
              role: str = "operator") -> dict:
    r = client.post(f"/api/v1/verdicts/{shift.verdict_ids[i]}/labels", headers=_auth(shift, role),
                    json={"label": "description", "region_id": shift.region_ids[i][0],
                          "description": text})
    assert r.status_code == 201, r.text
    return r.json()


def _kind_totals(client: TestClient, shift: SeededShift) -> Counter[str]:
    points = _get(client, shift, "/api/v1/aggregates/defect-kinds-series", top=50,
                  since="2026-11-23T08:00:00Z", until="2026-11-23T12:00:00Z")
    return Counter({p["description"]: 0 for p in points}) + Counter(
        {k: sum(p["verdicts"] for p in points if p["description"] == k)
         for k in {p["description"] for p in points}})


def _csv_rows(client: TestClient, shift: SeededShift, **params: object) -> list[dict[str, str]]:
    r = client.get("/api/v1/verdicts.csv", params={"limit": 500, **params},
                   headers=_auth(shift, "viewer"))
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def test_a_corrected_description_shows_everywhere_marked_as_the_operators(
        client: TestClient, shift: SeededShift) -> None:
    i = _first_of_kind("dent")
    vid = shift.verdict_ids[i]
    before = _kind_totals(client, shift)
    label = _describe(client, shift, i, "A scratch ")
    assert label["kind"] == "scratch"

    detail = _get(client, shift, f"/api/v1/verdicts/{vid}")
    assert detail["defect_items"] == [{
        "region_id": shift.region_ids[i][0], "kind": "scratch", "text": "A scratch",
        "by_operator": True, "operator_by": "operator-bot", "describer_kind": "dent",
        "describer_text": "a dent"}]
    assert detail["defects"] == ["A scratch"]
    region = detail["regions"][0]
    assert (region["operator_description"], region["operator_kind"], region["description"],
            region["kind"]) == ("A scratch", "scratch", "a dent", "dent")

    # History filters by the kind shown: the operator's, in any spelling of it.
    for defect in ("scratch", "a scratch", "Scratch "):
        ids = [v["id"] for v in _get(client, shift, "/api/v1/verdicts", defect=defect,
                                     limit=500)["items"]]
        assert vid in ids, defect
    assert vid not in [v["id"] for v in _get(client, shift, "/api/v1/verdicts", defect="dent",
                                             limit=500)["items"]]
    # Trends group by the kind key: one verdict moved from dent to scratch.
    after = _kind_totals(client, shift)
    assert after - before == Counter({"scratch": 1}) and before - after == Counter({"dent": 1})
    # The CSV says whose words they are, and keeps the describer's.
    row = next(r for r in _csv_rows(client, shift) if r["id"] == str(vid))
    assert (row["defects"], row["defect_kinds"], row["describer_defects"]) == (
        "A scratch (operator)", "scratch", "a dent")

    # A later, contradicting description wins; the earlier one stays in the history.
    _describe(client, shift, i, "a crack", role="admin")
    detail = _get(client, shift, f"/api/v1/verdicts/{vid}")
    assert [(d["kind"], d["text"], d["operator_by"]) for d in detail["defect_items"]] == [
        ("crack", "a crack", "admin-bot")]
    assert [(x["label"], x["description"], x["author"]) for x in detail["labels"]] == [
        ("description", "A scratch", "operator-bot"), ("description", "a crack", "admin-bot")]


def test_contradictory_decisions_the_latest_wins_and_both_stay(
        client: TestClient, shift: SeededShift) -> None:
    i = next(s.index for s in SHIFT if s.label == "anomalous" and s.product == "grid")
    vid = shift.verdict_ids[i]
    url = f"/api/v1/verdicts/{vid}/labels"
    for decision in ("anomalous", "normal"):
        r = client.post(url, json={"label": decision}, headers=_auth(shift, "operator"))
        assert r.status_code == 201, r.text
    detail = _get(client, shift, f"/api/v1/verdicts/{vid}")
    assert (detail["label"], detail["operator_label"], detail["operator_label_by"]) == (
        "anomalous", "normal", "operator-bot")
    assert [x["label"] for x in detail["labels"]] == ["anomalous", "normal"]

    def listed(**f: object) -> list[int]:
        return [v["id"] for v in _get(client, shift, "/api/v1/verdicts", limit=500,
                                      **f)["items"]]

    assert vid in listed(operator="normal") and vid in listed(operator="overruled")
    assert vid not in listed(operator="anomalous") and vid not in listed(operator="none")
    assert vid in listed(verdict="anomalous")  # the model's verdict is kept as it was
    row = next(r for r in _csv_rows(client, shift) if r["id"] == str(vid))
    assert (row["label"], row["operator_label"], row["operator_label_by"]) == (
        "anomalous", "normal", "operator-bot")
    client.cookies.set("clad_token", shift.tokens["viewer"])
    try:
        page = client.get(f"/verdicts/{vid}").text
        history_page = client.get("/history", params={"operator": "overruled"}).text
    finally:
        client.cookies.clear()
    assert 'data-source="operator"' in page and "normal · operator" in page
    assert 'data-model="anomalous"' in page
    assert page.count("· superseded") == 1 and page.count("· current") == 1
    assert f'data-verdict="{vid}"' in history_page and "by operator-bot" in history_page


def test_scores_read_relative_to_each_products_threshold(client: TestClient,
                                                         shift: SeededShift) -> None:
    items = _get(client, shift, "/api/v1/verdicts", limit=500)["items"]
    by_id = {v: s for s in SHIFT for k, v in shift.verdict_ids.items() if k == s.index}
    for item in items:
        s = by_id[item["id"]]
        assert item["score"] == pytest.approx(s.score)
        assert item["relative_score"] == pytest.approx(s.score / THRESHOLD[s.product])
    # One bound for both products, though their raw scales differ 40-fold.
    above = _get(client, shift, "/api/v1/verdicts", limit=500, min_relative=1.0)["items"]
    assert sorted(v["id"] for v in above) == sorted(
        shift.verdict_ids[s.index] for s in SHIFT if s.score >= s.threshold)
    assert {v["product"] for v in above} == {"bottle", "grid"}
    rows = _csv_rows(client, shift, min_relative=1.0, max_relative=1.05)
    assert rows and all(1.0 <= float(r["relative_score"]) <= 1.05 for r in rows)
    assert all(r["captured_at"].endswith("+00:00") for r in rows)
    assert all(len(r["score"].split(".")[1]) == 4 for r in rows)


def test_score_histograms_one_per_product_with_its_threshold(client: TestClient,
                                                             shift: SeededShift) -> None:
    got = _get(client, shift, "/api/v1/aggregates/score-histograms", bins=10,
               since="2026-11-23T08:00:00Z", until="2026-11-23T12:00:00Z")
    assert [(h["product"], h["threshold"]) for h in got] == [("bottle", 0.5), ("grid", 20.0)]
    for h in got:
        mine = [s for s in SHIFT if s.product == h["product"]]
        assert sum(h["normal"]) == sum(s.label == "normal" for s in mine)
        assert sum(h["anomalous"]) == sum(s.label == "anomalous" for s in mine)
        assert h["edges"][-1] >= max(s.score for s in mine)


def test_kinds_series_names_the_top_kinds_and_counts_the_rest_as_other(
        client: TestClient, shift: SeededShift) -> None:
    window = {"since": "2026-11-23T08:00:00Z", "until": "2026-11-23T12:00:00Z"}
    every = _get(client, shift, "/api/v1/aggregates/defect-kinds-series", top=50, **window)
    top = _get(client, shift, "/api/v1/aggregates/defect-kinds-series", top=8, **window)
    names = {p["description"] for p in top}
    assert len(names) == 9 and "other" in names
    assert "unnamed" in {p["label"] for p in top}  # the unclear kind reads "unnamed"
    # Each bucket's verdicts add up (a verdict here has one region, so one kind).
    for bucket in {p["bucket"] for p in every}:
        assert sum(p["verdicts"] for p in every if p["bucket"] == bucket) == sum(
            p["verdicts"] for p in top if p["bucket"] == bucket)


def test_alike_regions_form_one_group_named_with_one_label(
        client: TestClient, shift: SeededShift, pg_engine: Engine) -> None:
    alike = [shift.region_ids[i][0] for i in alike_indices()]
    assert len(alike) == ALIKE
    found = _get(client, shift, f"/api/v1/regions/{alike[0]}/similar")
    assert sorted(r["region_id"] for r in found) == sorted(alike[1:])
    assert all(r["similarity"] >= 0.9 and r["text"].startswith("unnamed: ") for r in found)
    # A region of another describer, with the very same bytes, is another space: not alike.
    with transaction(make_session_factory(pg_engine)) as session:
        twin = session.get(Region, alike[1])
        other = session.get(Region, shift.region_ids[_first_of_kind("hole")][0])
        other.describer, other.embedding = "trained-4567ef01", twin.embedding
    assert other.id not in [r["region_id"] for r in _get(
        client, shift, f"/api/v1/regions/{alike[0]}/similar")]

    # The review queue offers the group on each alike row it holds.
    queue = _get(client, shift, "/api/v1/review-queue", limit=500)
    queued = {r["id"]: r for item in queue["items"] for r in item["regions"]}
    assert any(a in queued for a in alike)
    assert all(queued[a]["similar"] == ALIKE - 1 for a in alike if a in queued)

    operator = _auth(shift, "operator")
    assert client.post("/api/v1/region-labels", headers=_auth(shift, "viewer"), json={
        "region_ids": alike, "description": "a hairline crack"}).status_code == 403
    missing = client.post("/api/v1/region-labels", headers=operator, json={
        "region_ids": [*alike, 10**12], "description": "a hairline crack"})
    assert missing.status_code == 404  # all or nothing
    with make_session_factory(pg_engine)() as session:
        assert session.scalar(select(func.count()).select_from(OperatorLabel).where(
            OperatorLabel.region_id.in_(alike))) == 0
    r = client.post("/api/v1/region-labels", headers=operator,
                    json={"region_ids": alike, "description": "a hairline crack"})
    assert r.status_code == 201, r.text
    assert [(x["region_id"], x["kind"], x["author"]) for x in r.json()] == [
        (a, "hairline_crack", "operator-bot") for a in alike]
    with make_session_factory(pg_engine)() as session:
        kinds = session.execute(select(Region.operator_kind, Region.kind, Region.describer)
                                .where(Region.id.in_(alike))).all()
    assert kinds == [("hairline_crack", "unclear", DESCRIBER)] * ALIKE
    # Named now: they leave the queue and no longer offer themselves as a group.
    after = _get(client, shift, "/api/v1/review-queue", limit=500)
    left = {r["id"] for item in after["items"] for r in item["regions"]}
    assert not left & set(alike)
    assert _get(client, shift, f"/api/v1/regions/{alike[0]}/similar") == []


def test_a_confirmed_describer_answer_is_one_label_of_its_kind(
        client: TestClient, shift: SeededShift) -> None:
    queue = _get(client, shift, "/api/v1/review-queue", limit=500)
    regions = [(item, r) for item in queue["items"] for r in item["regions"]]
    sure = [(item, r) for item, r in regions if r["kind"] not in ("unclear", None)
            and " or " not in (r["description"] or "")]
    hedged = [r for _, r in regions if " or " in (r["description"] or "")]
    assert sure and all(r["confirmable"] == r["description"] for _, r in sure)
    assert all(r["confirmable"] is None for r in hedged)
    assert all(r["confirmable"] is None for _, r in regions if r["kind"] == "unclear")
    item, region = sure[0]
    r = client.post(f"/api/v1/verdicts/{item['id']}/labels", headers=_auth(shift, "operator"),
                    json={"label": "description", "region_id": region["id"],
                          "description": region["confirmable"]})
    assert r.status_code == 201 and r.json()["kind"] == region["kind"]


def test_region_thumbnails_are_stored_once(client: TestClient, shift: SeededShift,
                                           pg_engine: Engine) -> None:
    from pipeline.storage.models import Thumbnail

    i = alike_indices()[0]
    first = client.get(f"/api/v1/regions/{shift.region_ids[i][0]}/thumb.png",
                       headers=_auth(shift, "viewer"))
    again = client.get(f"/api/v1/regions/{shift.region_ids[i][0]}/thumb.png",
                       headers=_auth(shift, "viewer"))
    assert first.status_code == 200 and first.content == again.content
    assert "immutable" in first.headers["cache-control"]
    import cv2

    picture = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
    assert max(picture.shape[:2]) == 96
    with make_session_factory(pg_engine)() as session:
        assert session.scalar(select(func.count()).select_from(Thumbnail).where(
            Thumbnail.verdict_id == shift.verdict_ids[i])) == 1
