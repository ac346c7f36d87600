"""The console's "Correct description" choice: the product's own kinds and the generic ones."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from engine.defects.defect_kinds import LABELS
from tests.integration.operator_data import SPEC, Seeded

pytestmark = pytest.mark.integration


def _choices(html: str) -> dict[str, list[str]]:
    groups = re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', html, re.S)
    return {label: re.findall(r"<option>([^<]+)</option>", body) for label, body in groups}


def test_the_correction_offers_the_products_kinds_then_the_generic_ones(
        client: TestClient, seeded: Seeded) -> None:
    i = next(s.index for s in SPEC if s.product == "bottle" and s.defects)
    vid = seeded.verdict_ids[i]
    op = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    region = client.get(f"/api/v1/verdicts/{vid}", headers=op).json()["regions"][0]
    r = client.post(f"/api/v1/verdicts/{vid}/labels", headers=op, json={
        "label": "description", "region_id": region["id"], "description": "chip on the rim"})
    assert r.status_code == 201, r.text
    assert client.post("/console/session",
                       json={"token": seeded.tokens["operator"]}).status_code == 200
    try:
        page = client.get(f"/verdicts/{vid}")
    finally:
        client.post("/console/logout")
        client.cookies.clear()
    assert page.status_code == 200
    choices = _choices(page.text)
    # the shipped bottle vocabulary, then what operators already said on bottles
    assert choices["bottle"] == ["broken large", "broken small", "contamination",
                                 "chip on the rim"]
    assert choices["Generic kinds"] == list(LABELS.values())
    assert "stain or discolouration" in choices["Generic kinds"]
    assert 'id="fix-other"' in page.text  # and a word of the operator's own
