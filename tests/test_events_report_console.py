"""The Events page's shift report and filters in a real Chromium at 1366x768: OK/NG per hour drawn from the
counts, the NG rate trend, top failing rules (a click filters the list by that rule), each camera's totals,
another period, the CSV download, and the list filtered by rule and time."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.db import open_database
from appliance.stations import events
from appliance.stations.contracts import InspectionEvent
from tests.console_support import login, served
from tests.helpers import wait_js

pytestmark = pytest.mark.browser

RULES = [{"name": "two screws", "condition": "present"}, {"name": "label", "condition": "present"}]


def test_shift_report_and_rule_filter(page: Page, tmp_path: Path, artifacts_dir: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with served(tmp_path) as (server, api):
        ids = []
        for name in ("press 1", "press 2"):
            body = {
                "name": name,
                "settings": {"source_type": "file", "source": "/media/usb/a.avi", "rules": RULES},
            }
            ids.append(api.http.post("/cameras", json=body, headers=api.headers).json()["id"])
        db = open_database(server.data_dir / "appliance.db")
        now = time.time()
        batch = []
        for i in range(120):  # the last two hours, both cameras; every 10th NG ("label" every 20th)
            failing = ["two screws"] if i % 10 == 0 else []
            if i % 20 == 0:
                failing.append("label")
            batch.append(
                InspectionEvent(
                    camera_id=ids[i % 2],
                    ts=now - 7000 + i * 55,
                    mode="interval",
                    verdict="ng" if failing else "ok",
                    failing_rules=failing,
                )
            )
        events.record_events(db, batch)
        db.conn.close()

        page.set_viewport_size({"width": 1366, "height": 768})
        login(
            page, server, "events?period=week"
        )  # the last 7 days hold the last two hours, even past midnight
        wait_js(
            page, "Number(document.querySelector('[data-testid=report-chart]')?.dataset.total || 0) === 120"
        )
        expect(page.get_by_test_id("report-period")).to_have_value("week")
        expect(page.get_by_test_id("report-summary")).to_contain_text("OK 108 · NG 12 · NG rate 10.0 %")
        expect(page.get_by_test_id("report-camera")).to_have_count(2)
        expect(page.get_by_test_id("report-rule").first).to_contain_text("two screws — 12 NG")
        assert int(page.get_by_test_id("report-trend").get_attribute("data-points") or 0) == 7
        expect(page.get_by_test_id("event-row").first).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "events-report.png"))

        # The CSV of the same period: one row per day and camera.
        with page.expect_download() as download:
            page.get_by_test_id("report-csv").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert len(rows) == 14 and sum(int(r["ng"]) for r in rows) == 12 and "NG label" in rows[0]

        # A failing rule filters the list by it; the list holds exactly those events.
        page.get_by_test_id("report-rule").filter(has_text="label").get_by_role("button").click()
        expect(page.get_by_test_id("events-rule")).to_have_value("label")
        expect(page.get_by_test_id("event-row")).to_have_count(6)
        expect(page.get_by_test_id("event-detail")).to_contain_text("label")

        # One camera, today: per hour.
        page.get_by_test_id("events-rule").select_option("")
        page.get_by_test_id("events-camera").select_option(str(ids[1]))
        page.get_by_test_id("report-period").select_option("today")
        wait_js(
            page, "Number(document.querySelector('[data-testid=report-chart]')?.dataset.points || 0) === 24"
        )
        expect(page.get_by_test_id("report-camera")).to_have_count(1)
        expect(page.get_by_test_id("report-camera")).to_contain_text("press 2")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []
