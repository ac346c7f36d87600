"""A shift in the console, in headless Debian chromium, on the seeded shift
(tests/integration/shift_data.py): operator accounts, readable scores, the operator's
word shown over the model's, a review queue worked with keys and group labels, trends
that cannot mislead, the API docs with no network, friendly errors, Live refreshed in
place. Screenshots go to tests/artifacts/. (Issue 32 items 2-7, issue 29 items 3 and 5.)
"""

from __future__ import annotations

import csv
import io
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pipeline.settings import AlarmSettings, ApiSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import AlarmRule, OperatorLabel, Region, Thumbnail, Verdict
from pipeline.storage.repository import write_verdicts
from tests.e2e.conftest import ARTIFACTS
from tests.integration.operator_data import Spec, blob_frame, record, truncate
from tests.integration.pipeline_support import free_port
from tests.integration.shift_data import (
    ALIKE,
    NOW,
    PASSWORD,
    SHIFT,
    SeededShift,
    alike_indices,
    seed_shift,
)
from workers.api import create_app

pytestmark = pytest.mark.e2e
ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def shift(pg_engine: Engine, shared_data: Path) -> Iterator[SeededShift]:
    data = seed_shift(pg_engine, frame_image=shared_data / "mvtec-sample" / "bottle" / "test" /
                      "broken_large" / "006.png")
    with transaction(make_session_factory(pg_engine)) as session:
        session.add(AlarmRule(name="line-1 spike", scope="line", target="line-1", max_rate=0.5,
                              window_minutes=60, min_verdicts=3, created_by="admin-bot"))
    yield data
    truncate(pg_engine)


@pytest.fixture(scope="module")
def base_url(pg_engine: Engine, shift: SeededShift) -> Iterator[str]:
    import uvicorn

    app: FastAPI = create_app(Settings(alarms=AlarmSettings(alarm_interval_s=0),
                                       api=ApiSettings(api_docs="viewer")),
                              pg_engine, clock=lambda: NOW)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):
        if server.started or not thread.is_alive():
            started.set()
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def _browser(p, chromium: Path):  # noqa: ANN001, ANN202 - Playwright objects
    browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
    return browser, browser.new_page(viewport={"width": 1366, "height": 900})


def _sign_in(page, base_url: str, username: str, path: str = "/") -> None:  # noqa: ANN001
    page.goto(f"{base_url}{path}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base_url}{path}")


def _all_thumbs_loaded(page, selector: str) -> None:  # noqa: ANN001
    # Thumbnails load lazily: each is brought into view and waited for in turn. Scrolling
    # past them all in one script let the browser skip the ones it never showed (how far
    # ahead it loads depends on its guess of the connection), so the wait below flaked.
    thumbs = page.locator(selector)
    for i in range(thumbs.count()):
        thumb = thumbs.nth(i)
        thumb.scroll_into_view_if_needed()
        page.wait_for_function("(i) => i.complete && i.naturalWidth > 0",
                               arg=thumb.element_handle())
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_function(f"() => [...document.querySelectorAll('{selector}')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")


def test_an_operator_signs_in_with_a_name_and_password(chromium: Path,
                                                       base_url: str, shift: SeededShift
                                                       ) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        page.goto(f"{base_url}/review")
        page.fill("#username", shift.users["viewer"])
        page.fill("#password", "not the password")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("unknown name or wrong password")
        page.screenshot(path=str(ARTIFACTS / "shift_login.png"))
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{base_url}/review")
        expect(page.locator(".who")).to_contain_text("viewer-ann · viewer")
        expect(page.locator("#review button[data-key]")).to_have_count(0)  # a viewer reads
        page.click("[data-logout]")
        page.wait_for_url(f"{base_url}/login")
        page.goto(f"{base_url}/history")
        page.wait_for_url(re.compile(r".*/login\?next=.*"))  # the session ended
        browser.close()


def test_history_reads_relative_scores_and_the_operators_latest_word(
        chromium: Path, base_url: str, shift: SeededShift, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    grid = next(s for s in reversed(SHIFT) if s.product == "grid" and s.label == "anomalous")
    vid = shift.verdict_ids[grid.index]
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        _sign_in(page, base_url, shift.users["operator"], "/history")
        _all_thumbs_loaded(page, "table.history img.thumb")
        rows = page.locator("#history-table tbody tr[data-verdict]")
        expect(rows).to_have_count(50)
        newest = {shift.verdict_ids[s.index]: s for s in SHIFT}
        shown = rows.evaluate_all("""(rows) => rows.map((r) => [Number(r.dataset.verdict),
            r.querySelector('.score .rel').textContent,
            r.querySelector('.score .raw').textContent])""")
        for verdict_id, rel, raw in shown:
            s = newest[verdict_id]
            assert rel == f"{s.score / s.threshold:.2f}×"
            assert raw == f"{s.score:.4g} / {s.threshold:.4g}"
        page.screenshot(path=str(ARTIFACTS / "shift_history.png"), full_page=True)

        page.goto(f"{base_url}/verdicts/{vid}")
        page.click("button[data-label=normal]")
        expect(page.locator("#label-status")).to_have_text("Saved: normal by operator-ann")
        expect(page.locator("#verdict-badge .badge")).to_have_text("normal · operator")
        expect(page.locator("#verdict-badge .model-said")).to_have_text("model: anomalous")
        page.click("button[data-label=anomalous]")
        expect(page.locator("#verdict-badge .badge")).to_have_text("anomalous · operator")
        expect(page.locator("#labels li.superseded")).to_have_count(1)
        expect(page.locator("#labels li.superseded")).to_contain_text("normal")
        expect(page.locator("#labels li.current")).to_contain_text("anomalous")
        page.screenshot(path=str(ARTIFACTS / "shift_verdict.png"), full_page=True)

        page.goto(f"{base_url}/history")
        page.select_option("select[name=operator]", "any")
        page.fill("input[name=min_relative]", "1,0")  # a comma decimal, as keyboards type it
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/history?operator=any&min_relative=1.0")
        expect(rows).to_have_count(1)
        expect(rows.first.locator(".label-cell")).to_have_text("anomalous by operator-ann")
        href = page.locator("#csv-export").get_attribute("href")
        exported = list(csv.DictReader(io.StringIO(page.request.get(f"{base_url}{href}").text())))
        browser.close()
    assert [(r["id"], r["label"], r["operator_label"], r["operator_label_by"],
             r["relative_score"]) for r in exported] == [
        (str(vid), "anomalous", "anomalous", "operator-ann", f"{grid.score / 20:.4f}")]
    with Session(pg_engine) as session:  # each thumbnail was rendered once and kept
        assert session.scalar(select(func.count()).select_from(Thumbnail)) >= 50


def test_review_queue_for_a_shift_group_labels_and_confirms(
        chromium: Path, base_url: str, shift: SeededShift, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    alike = [shift.region_ids[i][0] for i in alike_indices()]
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        _sign_in(page, base_url, shift.users["operator"], "/review?limit=10")
        api = page.request.get(f"{base_url}/api/v1/review-queue?limit=500").json()
        rows = page.locator("#review tbody tr[data-verdict]")
        expect(rows).to_have_count(10)
        ids = [int(x) for x in rows.evaluate_all("(rs) => rs.map((r) => r.dataset.verdict)")]
        assert ids == [i["id"] for i in api["items"][:10]]  # newest first
        times = [i["captured_at"] for i in api["items"]]
        assert times == sorted(times, reverse=True)
        # Bounded per product and hour (2 products x 4 hours x 2 lanes x 3), not by volume.
        assert int(page.locator("#review-waiting").text_content()) == api["waiting"] <= 48
        page.click("#next-page")
        expect(rows.first).to_have_attribute("data-verdict", str(api["items"][10]["id"]))
        page.goto(f"{base_url}/review?limit=500")
        _all_thumbs_loaded(page, "#review img.thumb")

        row = page.locator("#review tbody tr[data-similar='13']").first
        first_region = int(row.get_attribute("data-region"))
        assert first_region in alike
        row.locator("td").nth(1).click()  # select the row
        page.keyboard.press("d")
        dialog = page.locator("#fix-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("select.kind-choice[data-product=bottle]")).to_be_visible()
        expect(dialog.locator("#fix-group-thumbs img")).to_have_count(ALIKE - 1)
        _all_thumbs_loaded(page, "#fix-group-thumbs img")
        expect(dialog.locator("#fix-group-count")).to_have_text(str(ALIKE - 1))
        dialog.locator("#fix-group-thumbs input").last.uncheck()  # not the same kind, say
        expect(dialog.locator("#fix-group")).to_contain_text("Apply to 12 similar regions")
        dialog.locator("select.kind-choice[data-product=bottle]").select_option("")
        dialog.locator("#fix-other").fill("hairline crack")
        page.screenshot(path=str(ARTIFACTS / "shift_review_group.png"), full_page=True)
        left_out = int(dialog.locator("#fix-group-thumbs input").last.get_attribute("value"))
        dialog.locator("#fix-save").click()
        expect(page.locator("#review-status")).to_contain_text(
            "“hairline crack” and 12 similar regions by operator-ann")
        expect(page.locator(f"#review tbody tr[data-region='{first_region}']")).to_have_count(0)

        confirm = page.locator("#review tbody tr[data-confirm]:not([data-confirm=''])").first
        confirm_region = int(confirm.get_attribute("data-region"))
        answer = confirm.get_attribute("data-confirm")
        confirm.locator("td").nth(1).click()
        page.keyboard.press("c")
        expect(page.locator(f"#review tbody tr[data-region='{confirm_region}']")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "shift_review.png"), full_page=True)
        browser.close()

    with Session(pg_engine) as session:
        named = dict(session.execute(select(OperatorLabel.region_id, OperatorLabel.kind).where(
            OperatorLabel.region_id.in_(alike))).all())
        confirmed = session.execute(select(OperatorLabel.description, OperatorLabel.kind).where(
            OperatorLabel.region_id == confirm_region)).one()
        confirm_kind = session.scalar(select(Region.kind).where(Region.id == confirm_region))
    assert set(named) == set(alike) - {left_out} and set(named.values()) == {"hairline_crack"}
    assert confirmed == (answer, confirm_kind)


def test_trends_per_product_scores_counts_alarm_levels_and_top_kinds(
        chromium: Path, base_url: str, shift: SeededShift) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        _sign_in(page, base_url, shift.users["viewer"],
                 "/trends?since=2026-11-23T08%3A00&until=2026-11-23T12%3A00")
        page.wait_for_function("() => document.getElementById('trends').dataset.ready === '1'")
        rate = page.evaluate("""() => window.cladCharts.rate.data.datasets.map((d) => ({
            label: d.label, type: d.type, axis: d.yAxisID, data: d.data, counts: d.counts || null,
            dash: d.borderDash || null}))""")
        kinds = page.evaluate("""() => window.cladCharts.kinds.data.datasets.map((d) => ({
            label: d.label, kind: d.kind, colour: d.backgroundColor,
            total: d.data.reduce((a, b) => a + b, 0)}))""")
        scores = page.evaluate("""() => Object.fromEntries(Object.entries(window.cladCharts.scores)
            .map(([p, c]) => [p, {threshold: c.data.datasets[2].data.map((q) => q.x),
                                  counts: c.data.datasets.slice(0, 2).map(
                                      (d) => d.data.reduce((a, q) => a + q.y, 0)),
                                  axis: c.options.scales.x.title.text}]))""")
        page.screenshot(path=str(ARTIFACTS / "shift_trends.png"), full_page=True)
        browser.close()

    by_label = {d["label"]: d for d in rate}
    line1 = by_label["line-1"]
    # Counts behind every rate: (anomalous, total) per hour, as the shift says.
    for hour, (bad, total) in enumerate(line1["counts"]):
        mine = [s for s in SHIFT if s.line_id == "line-1"
                and s.captured_at.hour == 8 + hour]
        assert (bad, total) == (sum(s.label == "anomalous" for s in mine), len(mine))
        assert line1["data"][hour] == pytest.approx(100 * bad / total)
    assert line1["data"][3] == 100  # the spike
    assert by_label["verdicts inspected"]["type"] == "bar"
    assert by_label["verdicts inspected"]["data"] == [36, 36, 36, 36]
    alarm = next(d for d in rate if d["label"].startswith("alarm “line-1 spike”"))
    assert alarm["data"] == [50, 50, 50, 50] and alarm["dash"] == [6, 4]
    # Top kinds plus "other", each in its own colour, "other" last and grey.
    assert len(kinds) == 9 and kinds[-1]["kind"] == "other"
    assert len({k["colour"] for k in kinds}) == 9
    assert [k["total"] for k in kinds[:-1]] == sorted((k["total"] for k in kinds[:-1]),
                                                      reverse=True)
    # The review test named 13 alike unclear regions: trends count them under that name.
    assert (kinds[0]["label"], kinds[0]["total"]) == ("hairline crack", ALIKE - 1)
    # One histogram per product, each with its own threshold and scale.
    assert scores["bottle"]["threshold"] == [0.5, 0.5]
    assert scores["grid"]["threshold"] == [20, 20]
    for product in ("bottle", "grid"):
        mine = [s for s in SHIFT if s.product == product]
        assert scores[product]["counts"] == [sum(s.label == "normal" for s in mine),
                                             sum(s.label == "anomalous" for s in mine)]


def test_docs_load_with_no_network_and_errors_are_pages(
        chromium: Path, base_url: str, shift: SeededShift) -> None:
    from playwright.sync_api import expect, sync_playwright

    elsewhere: list[str] = []
    with sync_playwright() as p:
        browser, page = _browser(p, chromium)

        def only_here(route) -> None:  # noqa: ANN001 - a Playwright route
            if route.request.url.startswith(base_url):
                route.continue_()
            else:  # a plant runs offline: anything else would hang there
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_here)
        _sign_in(page, base_url, shift.users["viewer"], "/history")
        page.click("nav a[href='/docs']")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "clad-line operator API", timeout=20000)
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "shift_docs.png"))

        page.goto(f"{base_url}/history?min_relative=0,5")
        expect(page.locator("#error-page")).to_contain_text("dot as the decimal separator")
        page.screenshot(path=str(ARTIFACTS / "shift_error.png"))
        page.goto(f"{base_url}/verdicts/987654321")
        expect(page.locator("#error-page h1")).to_contain_text("Not found")
        expect(page.locator("#error-message")).to_have_text("verdict 987654321 not found")
        browser.close()
    assert elsewhere == []


def test_live_refreshes_in_place_in_utc(chromium: Path, base_url: str,
                                        shift: SeededShift, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _browser(p, chromium)
        _sign_in(page, base_url, shift.users["viewer"], "/")
        expect(page.locator("#live-updated")).to_have_text("updated 12:00:00 UTC")
        page.evaluate("() => { window.stillThisPage = true; }")
        _, heat, mask = blob_frame()
        fresh = record(Spec(999, "cam-c", "line-2", "grid", NOW - timedelta(minutes=1), 25.0,
                            "anomalous", ("a fold",)), heat, mask)
        fresh = replace(fresh, frame_id=uuid.uuid4(), threshold=20.0)
        with transaction(make_session_factory(pg_engine)) as session:
            write_verdicts(session, [fresh])
            new_id = session.scalar(select(Verdict.id).where(Verdict.frame_id == fresh.frame_id))
        tile = page.locator("#live [data-camera=cam-c]")
        expect(tile).to_have_attribute("data-verdict", str(new_id), timeout=15000)
        assert page.evaluate("() => window.stillThisPage") is True  # no reload
        expect(tile.locator(".score .rel")).to_have_text("1.25×")
        expect(page.locator("#live-updated")).to_have_text("updated 12:00:00 UTC")
        page.wait_for_function("() => window.cladCharts.live['cam-c'] !== undefined")
        page.screenshot(path=str(ARTIFACTS / "shift_live.png"), full_page=True)
        browser.close()
