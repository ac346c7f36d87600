"""Labels through the API, checked, attributed, and read back as retraining data."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from engine.defects import rle
from pipeline.storage.labels import training_examples
from tests.integration.operator_data import SPEC, Seeded

pytestmark = pytest.mark.integration


@pytest.fixture
def op(seeded: Seeded) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded.tokens['operator']}"}


def _regions(client: TestClient, vid: int, headers: dict[str, str]) -> list[dict]:
    return client.get(f"/api/v1/verdicts/{vid}", headers=headers).json()["regions"]


@pytest.mark.parametrize(("body", "message"), [
    ({"label": "great"}, "body.label"),
    ({"label": "description"}, "region_id and description"),
    ({"label": "missing_region"}, "needs mask_rle"),
    ({"label": "missing_region", "mask_rle": {"size": [48, 64], "counts": [5, 5]}}, "cover"),
    ({"label": "missing_region", "mask_rle": "abc"}, "body.mask_rle"),
    ({"label": "normal", "mask_rle": {"size": [1, 1], "counts": [1]}}, "only for"),
])
def test_invalid_labels_are_422(client: TestClient, seeded: Seeded, op: dict[str, str],
                                body: dict, message: str) -> None:
    r = client.post(f"/api/v1/verdicts/{seeded.verdict_ids[12]}/labels", json=body, headers=op)
    assert r.status_code == 422 and message in r.json()["error"]["message"]


def test_label_on_unknown_verdict_is_404(client: TestClient, op: dict[str, str]) -> None:
    r = client.post("/api/v1/verdicts/999999/labels", json={"label": "normal"}, headers=op)
    assert r.status_code == 404


def test_label_on_a_region_the_verdict_lacks_is_404(client: TestClient, seeded: Seeded,
                                                    op: dict[str, str]) -> None:
    vid = seeded.verdict_ids[12]
    r = client.post(f"/api/v1/verdicts/{vid}/labels", headers=op,
                    json={"label": "description", "region_id": 999999, "description": "x"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"verdict {vid} has no region 999999"


def test_label_round_trip_reaches_the_retraining_read(
        client: TestClient, seeded: Seeded, op: dict[str, str], pg_engine: Engine) -> None:
    confirmed, wrong, corrected = (seeded.verdict_ids[i] for i in (16, 18, 22))
    region = _regions(client, corrected, op)[0]
    drawn = np.zeros((48, 64), bool)
    drawn[2:6, 3:9] = True
    posts = [
        (confirmed, {"label": "anomalous"}),
        (wrong, {"label": "anomalous"}),
        (wrong, {"label": "normal"}),  # changed mind: the latest word wins
        (corrected, {"label": "description", "region_id": region["id"],
                     "description": "dent in the shoulder"}),
        (corrected, {"label": "missing_region", "mask_rle": rle.encode(drawn),
                     "description": "chip"}),
    ]
    kinds = []
    for vid, body in posts:
        r = client.post(f"/api/v1/verdicts/{vid}/labels", json=body, headers=op)
        assert r.status_code == 201, r.text
        assert r.json()["author"] == "operator-tester" and r.json()["created_at"]
        kinds.append(r.json()["kind"])
    assert kinds == [None, None, None, "dent_in_the_shoulder", "chip"]
    history = client.get(f"/api/v1/verdicts/{wrong}/labels", headers=op).json()
    assert [x["label"] for x in history] == ["anomalous", "normal"]

    with Session(pg_engine) as session:
        examples = {e.verdict_id: e for e in training_examples(session, product="bottle")}
    assert set(examples) == {confirmed, wrong, corrected}
    assert examples[wrong].label == "normal" and examples[wrong].regions == []
    first = examples[confirmed]
    assert first.label == "anomalous" and first.has_image_bytes
    assert [r.description for r in first.regions] == list(SPEC[16].defects)
    fixed = examples[corrected]
    assert fixed.label == "anomalous" and fixed.labelled_by == "operator-tester"
    assert [(r.description, r.source) for r in fixed.regions] == [
        ("dent in the shoulder", "model"), ("chip", "operator")]
    assert (rle.decode(fixed.regions[-1].mask_rle) == drawn).all()
    with Session(pg_engine) as session:
        assert training_examples(session, product="screw") == []


def test_spellings_of_one_kind_are_recorded_as_one_kind(
        client: TestClient, seeded: Seeded, op: dict[str, str]) -> None:
    typed = ["Scratch ", "a scratch", "scratches", "Bent lead", "bent leads"]
    kinds = []
    for i, text in zip((16, 18, 22, 16, 18), typed, strict=True):
        vid = seeded.verdict_ids[i]
        region = _regions(client, vid, op)[0]
        r = client.post(f"/api/v1/verdicts/{vid}/labels", headers=op, json={
            "label": "description", "region_id": region["id"], "description": text})
        assert r.status_code == 201, r.text
        assert r.json()["description"] == text.strip(), "the typed text is kept as typed"
        kinds.append(r.json()["kind"])
    assert kinds == ["scratch", "scratch", "scratch", "bent_lead", "bent_lead"]
    r = client.post(f"/api/v1/verdicts/{seeded.verdict_ids[16]}/labels", headers=op, json={
        "label": "description", "region_id": _regions(client, seeded.verdict_ids[16], op)[0]["id"],
        "description": "the ..."})
    assert r.status_code == 422 and "names no defect kind" in r.json()["error"]["message"]
