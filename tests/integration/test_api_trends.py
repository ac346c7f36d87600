"""Trend series and the score histogram against answers computed from SPEC by hand."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.integration.api_support import assert_error_format
from tests.integration.operator_data import SPEC, T0, Seeded, Spec

pytestmark = pytest.mark.integration


def _get(client: TestClient, seeded: Seeded, path: str, **params: object):  # noqa: ANN202
    r = client.get(path, params=params,
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert r.status_code == 200, r.text
    return r.json()


def _start(when: datetime, bucket: str) -> datetime:
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    # shifts start 06:00, 14:00, 22:00 UTC
    start = day + timedelta(hours=6)
    while start > when:
        start -= timedelta(hours=8)
    while start + timedelta(hours=8) <= when:
        start += timedelta(hours=8)
    return start


def _key(s: Spec, by: str) -> str:
    return {"line": s.line_id, "camera": s.camera_id, "product": s.product}[by]


@pytest.mark.parametrize("bucket", ["hour", "shift", "day", "week"])
@pytest.mark.parametrize("by", ["line", "camera", "product"])
def test_rate_series_counts_each_bucket_and_key(client: TestClient, seeded: Seeded,
                                                by: str, bucket: str) -> None:
    total: Counter[tuple[str, str]] = Counter()
    anomalous: Counter[tuple[str, str]] = Counter()
    for s in SPEC:
        k = (_start(s.captured_at, bucket).isoformat().replace("+00:00", "Z"), _key(s, by))
        total[k] += 1
        anomalous[k] += s.label == "anomalous"
    expected = [{"bucket": b, "key": k, "total": total[b, k], "anomalous": anomalous[b, k],
                 "rate": anomalous[b, k] / total[b, k]} for b, k in sorted(total)]
    got = _get(client, seeded, "/api/v1/aggregates/defect-rate-series", by=by, bucket=bucket,
               since=(T0 - timedelta(days=3)).isoformat(),
               until=(T0 + timedelta(days=3)).isoformat())
    assert got == expected


def test_rate_series_hourly_on_line_1_rises_to_all_anomalous(client: TestClient,
                                                             seeded: Seeded) -> None:
    got = _get(client, seeded, "/api/v1/aggregates/defect-rate-series", line="line-1")
    # 08:00: scores 0..0.21 all normal; 11:00: scores >= 0.75 all anomalous.
    assert [(p["bucket"][11:13], p["total"], p["anomalous"]) for p in got] == [
        ("08", 4, 0), ("09", 4, 0), ("10", 4, 4), ("11", 4, 4)]


def test_kind_series_counts_verdicts_per_kind_and_hour(client: TestClient,
                                                       seeded: Seeded) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for s in SPEC:
        for d in set(s.defects):
            counts[_start(s.captured_at, "hour").isoformat().replace("+00:00", "Z"), d] += 1
    expected = [{"bucket": b, "description": d, "label": d, "verdicts": n}
                for (b, d), n in sorted(counts.items())]
    assert _get(client, seeded, "/api/v1/aggregates/defect-kinds-series") == expected


def test_score_histogram_splits_normal_and_anomalous_and_carries_the_threshold(
        client: TestClient, seeded: Seeded) -> None:
    h = _get(client, seeded, "/api/v1/aggregates/score-histogram", product="bottle", bins=10)
    bottle = [s for s in SPEC if s.product == "bottle"]
    top = max(s.score for s in bottle)  # 22/24, above 1.5 x 0.5
    assert h["threshold"] == 0.5 and h["thresholds"] == [0.5]
    assert h["edges"][0] == 0 and h["edges"][-1] == pytest.approx(top)
    width = top / 10
    normal, anomalous = [0] * 10, [0] * 10
    for s in bottle:
        (anomalous if s.label == "anomalous" else normal)[min(int(s.score / width), 9)] += 1
    assert (h["normal"], h["anomalous"]) == (normal, anomalous)
    assert sum(h["normal"]) + sum(h["anomalous"]) == len(bottle)


def test_series_reject_a_period_too_long_for_the_bucket(client: TestClient,
                                                       seeded: Seeded) -> None:
    r = client.get("/api/v1/aggregates/defect-rate-series",
                   params={"bucket": "hour", "since": "2026-01-01T00:00:00Z",
                           "until": "2026-11-01T00:00:00Z"},
                   headers={"Authorization": f"Bearer {seeded.tokens['viewer']}"})
    assert_error_format(r, 422)
    assert "31 days" in r.json()["error"]["message"]


def test_trends_page_renders_for_a_viewer(client: TestClient, seeded: Seeded) -> None:
    client.cookies.set("clad_token", seeded.tokens["viewer"])
    try:
        r = client.get("/trends", params={"product": "bottle", "bucket": "shift"})
    finally:
        client.cookies.clear()
    assert r.status_code == 200
    assert 'id="chart-rate"' in r.text and "/static/chart-4.6.1.umd.min.js" in r.text
    assert "product=bottle" in r.text and "bucket=shift" in r.text
