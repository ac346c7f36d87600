"""The web console in headless Debian chromium: filter, open an anomalous verdict, label it.

Needs the system chromium (`apt-get install -y chromium`) and the `playwright`
Python package (dev extra); Playwright drives that binary, no browser download.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pipeline.settings import AlarmSettings, ReviewSettings, Settings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Alarm, AlarmRule, OperatorLabel
from tests.e2e.conftest import ARTIFACTS
from tests.integration.operator_data import SPEC, T0, Seeded, seed, truncate
from tests.integration.pipeline_support import free_port
from workers.api import create_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def seeded(pg_engine: Engine, shared_data: Path) -> Iterator[Seeded]:
    data = seed(pg_engine, frame_image=shared_data / "mvtec-sample" / "bottle" / "test" /
                "broken_large" / "006.png")
    yield data
    truncate(pg_engine)


@pytest.fixture(scope="module")
def console_app(pg_engine: Engine, seeded: Seeded) -> FastAPI:
    # No alarm timer: the alarm test evaluates once, when its rule is in place.
    return create_app(Settings(alarms=AlarmSettings(alarm_interval_s=0),
                               review=ReviewSettings(review_per_hour=1)), pg_engine,
                      clock=lambda: T0 + timedelta(hours=4))


@pytest.fixture(scope="module")
def base_url(console_app: FastAPI) -> Iterator[str]:
    import uvicorn

    port = free_port()
    app = console_app
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):  # uvicorn flips `started` once it listens
        if server.started or not thread.is_alive():
            started.set()
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def test_filter_open_anomalous_verdict_see_overlay_and_label(
        chromium: Path, base_url: str, seeded: Seeded, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{base_url}/history")  # redirected to sign in first
        sign_in_with_token(page, seeded.tokens["operator"])
        page.wait_for_url(f"{base_url}/history")

        page.select_option("select[name=verdict]", "anomalous")
        page.select_option("select[name=defect]", "contamination")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/history?verdict=anomalous&defect=contamination")
        rows = page.locator("table.history tbody tr")
        expect(rows).to_have_count(3)  # verdicts 12, 16, 20 carry contamination
        for i in range(3):
            expect(rows.nth(i).locator(".badge")).to_have_text("anomalous")
        expect(page.locator("#csv-export")).to_have_attribute(
            "href", "/api/v1/verdicts.csv?verdict=anomalous&defect=contamination&limit=500")
        page.wait_for_function("() => [...document.querySelectorAll('table.history img.thumb')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / "console_history.png"))

        rows.first.locator("a", has_text="open").click()
        page.wait_for_url("**/verdicts/*")
        overlay = page.locator("#overlay")
        expect(overlay).to_be_visible()
        page.wait_for_function(
            "() => { const i = document.getElementById('overlay');"
            " return i.complete && i.naturalWidth === 256; }")
        expect(page.locator(".regions li")).to_have_count(2)

        page.click("button[data-label=anomalous]")  # saved, then the page shows it everywhere
        expect(page.locator("#label-status")).to_have_text(
            "Saved: anomalous by operator-tester")
        expect(page.locator("#labels li").last).to_contain_text("anomalous")
        expect(page.locator("#labels li").last).to_contain_text("by operator-tester")
        expect(page.locator("#verdict-badge .badge")).to_have_text("anomalous · operator")
        page.screenshot(path=str(ARTIFACTS / "console_verdict.png"))
        verdict_id = int(page.url.rsplit("/", 1)[1])
        browser.close()

    assert verdict_id == seeded.verdict_ids[20]  # newest contamination verdict
    with Session(pg_engine) as session:
        labels = session.scalars(select(OperatorLabel).where(
            OperatorLabel.verdict_id == verdict_id)).all()
    assert [(x.label, x.author) for x in labels] == [("anomalous", "operator-tester")]


def sign_in_with_token(page, token: str) -> None:  # noqa: ANN001 - a Playwright page
    """Tokens are for scripts, but the login page still takes one (behind a disclosure)."""
    page.click("#token-login summary")
    page.fill("#token", token)
    page.click("#token-submit")


def _signed_in_page(p, chromium: Path, base_url: str, token: str, path: str):  # noqa: ANN001, ANN202
    browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                args=["--no-sandbox", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(f"{base_url}{path}")
    sign_in_with_token(page, token)
    page.wait_for_url(f"{base_url}{path}")
    return browser, page


def test_trends_charts_plot_the_seeded_rates(chromium: Path, base_url: str,
                                             seeded: Seeded) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _signed_in_page(p, chromium, base_url, seeded.tokens["viewer"],
                                        "/trends")
        page.wait_for_function("() => document.getElementById('trends').dataset.ready === '1'")
        rate = page.evaluate("""() => { const c = window.cladCharts.rate.data;
            return {labels: c.labels, sets: c.datasets.map((d) => [d.label, d.data])}; }""")
        kinds = page.evaluate("""() => window.cladCharts.kinds.data.datasets.map(
            (d) => [d.label, d.data])""")
        scores = page.evaluate("""() => Object.fromEntries(Object.entries(window.cladCharts.scores)
            .map(([p, c]) => [p, c.data.datasets.map(
                (d) => [d.label, d.data.map((q) => q.y), d.data.map((q) => q.x)])]))""")
        drawn = page.evaluate("""() => window.cladCharts.rate.getDatasetMeta(0).data.length""")
        page.screenshot(path=str(ARTIFACTS / "console_trends.png"), full_page=True)
        browser.close()

    # Seed: scores i/24 every 10 min from 08:00; anomalous from 0.5 (i >= 12, 10:00 on).
    assert rate["labels"] == ["2026-11-23 08:00", "2026-11-23 09:00", "2026-11-23 10:00",
                              "2026-11-23 11:00"]
    # Per line its rate, then the verdicts inspected per hour (4 per line-1 hour, 2 line-2).
    assert rate["sets"] == [["line-1", [0, 0, 100, 100]], ["line-2", [0, 0, 100, 100]],
                            ["verdicts inspected", [6, 6, 6, 6]]]
    assert drawn == 4  # a point element per bucket, not just a canvas
    # Most verdicts first (ties by name), each in its own colour.
    assert kinds == [["crack in the body", [0, 0, 3, 3]], ["scratch on the neck", [0, 0, 3, 3]],
                     ["contamination", [0, 0, 2, 1]]]
    assert sorted(scores) == ["bottle", "screw"]  # one histogram per product
    for product, count in (("bottle", 16), ("screw", 8)):
        normal, anomalous, threshold = scores[product]
        assert sum(normal[1]) + sum(anomalous[1]) == count
        assert threshold[0] == "threshold 0.500" and threshold[2] == [0.5, 0.5]


def test_review_queue_lists_the_closest_per_hour_newest_first_and_one_key_labels(
        chromium: Path, base_url: str, seeded: Seeded, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.integration.test_api_review import expected_queue

    # Per hour the closest bottle and the closest screw; verdict 20 left the queue when the
    # first test labelled it (a labelled verdict pulls no other in).
    expected = [seeded.verdict_ids[i] for i in expected_queue(SPEC, per_hour=1) if i != 20]
    assert len(expected) == 7
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _signed_in_page(p, chromium, base_url, seeded.tokens["operator"],
                                        "/review")
        rows = page.locator("#review tbody tr[data-verdict]")
        expect(rows).to_have_count(7)
        assert [int(x) for x in rows.evaluate_all(
            "(rows) => rows.map((r) => r.dataset.verdict)")] == expected
        expect(page.locator("#review-waiting")).to_have_text("7")
        page.wait_for_function("() => [...document.querySelectorAll('#review img.thumb')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / "console_review.png"), full_page=True)
        page.keyboard.press("n")  # the newest row is selected: mark it normal
        expect(rows).to_have_count(6)
        expect(page.locator("#review-waiting")).to_have_text("6")
        expect(page.locator("#review-status")).to_have_text(
            f"Verdict {expected[0]}: normal by operator-tester")
        assert [int(x) for x in rows.evaluate_all(
            "(rows) => rows.map((r) => r.dataset.verdict)")] == expected[1:]
        page.reload()
        expect(rows).to_have_count(6)  # gone for good, not only from the page
        browser.close()

    with Session(pg_engine) as session:
        labels = session.scalars(select(OperatorLabel).where(
            OperatorLabel.verdict_id == expected[0])).all()
    assert [(x.label, x.author) for x in labels] == [("normal", "operator-tester")]


def test_alarm_banner_on_a_seeded_spike_is_acknowledged_and_live_shows_the_hour(
        chromium: Path, base_url: str, console_app: FastAPI, seeded: Seeded,
        pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    with transaction(make_session_factory(pg_engine)) as session:
        session.add(AlarmRule(name="line-1 spike", scope="line", target="line-1", max_rate=0.5,
                              window_minutes=60, min_verdicts=3, created_by="admin-tester"))
    assert console_app.state.alarms.run_once() == 1  # 11:00-12:00 on line-1: 4 of 4 bad
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = _signed_in_page(p, chromium, base_url, seeded.tokens["operator"], "/")
        banner = page.locator("#alarm-banner")
        expect(banner).to_contain_text("line line-1: defect rate 100% (4/4) over 60 min")
        expect(banner).to_contain_text("above 50%")
        page.wait_for_function("() => window.cladCharts && window.cladCharts.live"
                               " && document.querySelectorAll('.thumbs img').length === 12"
                               " && [...document.querySelectorAll('.thumbs img')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")
        spark = page.evaluate("""() => { const c = window.cladCharts.live['cam-a'].data;
            return {labels: c.labels, rates: c.datasets[0].data}; }""")
        thumbs = page.locator("[data-camera=cam-a] .thumbs img").evaluate_all(
            "(imgs) => imgs.map((i) => i.alt)")
        page.screenshot(path=str(ARTIFACTS / "console_live.png"), full_page=True)
        page.click("#alarm-banner [data-ack]")
        expect(banner).to_have_count(0)
        page.reload()
        expect(page.locator("#alarm-banner")).to_have_count(0)
        page.goto(f"{base_url}/alarms")
        expect(page.locator("#alarm-list tbody tr").first).to_contain_text("operator-tester")
        page.screenshot(path=str(ARTIFACTS / "console_alarms.png"), full_page=True)
        browser.close()

    # cam-a: verdicts 18 (11:00) and 21 (11:30) in the last hour, both anomalous.
    assert spark["labels"] == [f"11:{m:02d}" for m in range(0, 60, 5)]
    assert spark["rates"] == [100, None, None, None, None, None, 100, None, None, None, None,
                              None]
    newest_first = [seeded.verdict_ids[i] for i in (21, 18, 15, 12)]
    assert thumbs == [f"verdict {v}" for v in newest_first]
    with Session(pg_engine) as session:
        alarm = session.scalars(select(Alarm)).one()
    assert alarm.acknowledged_by == "operator-tester"
    assert alarm.acknowledged_at == T0 + timedelta(hours=4)


def test_admin_adds_an_alarm_rule_viewer_cannot(chromium: Path, base_url: str,
                                                seeded: Seeded, pg_engine: Engine) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _signed_in_page(p, chromium, base_url, seeded.tokens["viewer"],
                                        "/alarms")
        expect(page.locator("#rule-form")).to_have_count(0)
        browser.close()
        browser, page = _signed_in_page(p, chromium, base_url, seeded.tokens["admin"],
                                        "/alarms")
        page.fill("#rule-form input[name=name]", "cam-c over a third")
        page.select_option("#rule-form select[name=scope]", "camera")
        page.fill("#rule-form input[name=target]", "cam-c")
        page.fill("#rule-form input[name=max_rate]", "33.3")
        page.fill("#rule-form input[name=window_minutes]", "30")
        page.fill("#rule-form input[name=min_verdicts]", "2")
        page.click("#rule-form button[type=submit]")
        row = page.locator("#rule-list tr", has_text="cam-c over a third")
        expect(row).to_contain_text("camera cam-c")
        expect(row).to_contain_text("33%")
        page.screenshot(path=str(ARTIFACTS / "console_alarms_admin.png"), full_page=True)
        browser.close()

    with Session(pg_engine) as session:
        rule = session.scalars(select(AlarmRule).where(
            AlarmRule.name == "cam-c over a third")).one()
    assert (rule.scope, rule.target, rule.window_minutes, rule.min_verdicts,
            rule.created_by) == ("camera", "cam-c", 30, 2, "admin-tester")
    assert rule.max_rate == pytest.approx(0.333)
