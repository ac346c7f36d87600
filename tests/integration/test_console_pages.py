"""Console polish: HTML error pages for browsers (JSON for scripts), the API docs served
from the package with no CDN, thumbnails rendered once and dropped with their frames,
the Live grid as a fragment for in-place refresh, times in UTC."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from pipeline.settings import AlarmSettings, ApiSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.frame_store import purge_frames
from pipeline.storage.models import Thumbnail
from tests.integration.api_support import assert_error_format
from tests.integration.conftest import make_client
from tests.integration.operator_data import T0, Seeded

pytestmark = pytest.mark.integration
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
STATIC = Path(__file__).resolve().parents[2] / "workers" / "api" / "static"


@pytest.fixture(scope="module")
def client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    settings = Settings(alarms=AlarmSettings(alarm_interval_s=0),
                        api=ApiSettings(api_docs="viewer"))
    yield from make_client(settings, pg_engine)


@pytest.fixture
def signed_in(client: TestClient, seeded: Seeded) -> Iterator[TestClient]:
    client.cookies.set("clad_token", seeded.tokens["viewer"])
    yield client
    client.cookies.clear()


def test_a_comma_decimal_is_a_page_saying_what_is_expected(signed_in: TestClient) -> None:
    page = signed_in.get("/history", params={"min_relative": "0,5"}, headers=BROWSER)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "min_relative" in page.text and "0,5" in page.text
    assert "dot as the decimal separator" in page.text
    # Scripts still get the JSON error, whatever they ask for.
    assert_error_format(signed_in.get("/api/v1/verdicts", params={"min_score": "0,5"}), 422)


def test_an_unknown_verdict_is_a_404_page(signed_in: TestClient) -> None:
    page = signed_in.get("/verdicts/999999", headers=BROWSER)
    assert page.status_code == 404 and 'id="error-page"' in page.text
    assert "verdict 999999 not found" in page.text
    assert_error_format(signed_in.get("/api/v1/verdicts/999999"), 404)
    assert signed_in.get("/no/such/page", headers=BROWSER).status_code == 404


def test_docs_use_the_vendored_swagger_ui_and_no_other_host(signed_in: TestClient) -> None:
    docs = signed_in.get("/docs", headers=BROWSER)
    assert docs.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert urls and all(u.startswith("/static/swagger-ui/") for u in urls), urls
    assert "cdn" not in docs.text.lower() and '"validatorUrl": null' in docs.text
    for url in urls:
        assert signed_in.get(url).status_code == 200, url
    assert "Apache License" in (STATIC / "swagger-ui" / "LICENSE").read_text()
    assert signed_in.get("/openapi.json").json()["info"]["title"] == "clad-line operator API"


def test_thumbnails_are_rendered_once_and_go_with_their_frames(
        client: TestClient, seeded: Seeded, pg_engine: Engine) -> None:
    viewer = {"Authorization": f"Bearer {seeded.tokens['viewer']}"}
    vid = seeded.verdict_ids[12]
    url = f"/api/v1/verdicts/{vid}/overlay.png"
    first = client.get(url, params={"max_side": 96}, headers=viewer)
    again = client.get(url, params={"max_side": 96}, headers=viewer)
    odd = client.get(url, params={"max_side": 97}, headers=viewer)  # rendered, not stored
    assert first.status_code == again.status_code == odd.status_code == 200
    assert first.content == again.content and "immutable" in first.headers["cache-control"]

    def stored() -> list[str]:
        with make_session_factory(pg_engine)() as session:
            return list(session.scalars(select(Thumbnail.variant).where(
                Thumbnail.verdict_id == vid)))

    assert stored() == ["overlay-96"]
    with transaction(make_session_factory(pg_engine)) as session:
        purge_frames(session, older_than=T0 + timedelta(hours=3), frame_dir=Path("frames"))
    assert stored() == []
    with make_session_factory(pg_engine)() as session:
        assert session.scalar(select(func.count()).select_from(Thumbnail)) == 0


def test_live_grid_fragment_for_in_place_refresh(client: TestClient, signed_in: TestClient
                                                 ) -> None:
    grid = signed_in.get("/console/live")
    assert grid.status_code == 200 and grid.text.lstrip().startswith('<div class="grid live-grid"')
    assert "<html" not in grid.text and 'data-stamp="12:00:00"' in grid.text
    assert grid.text.count("UTC") >= 3  # every time on it is labelled
    page = signed_in.get("/")
    assert 'data-poll="/console/live"' in page.text and "updated 12:00:00 UTC" in page.text
    client.cookies.clear()
    assert_error_format(client.get("/console/live"), 401)
