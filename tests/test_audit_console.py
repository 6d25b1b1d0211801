"""The console's change control in a real Chromium at 1366x768 against a real server: an event's page shows the model
version and exactly the rules and zones of the settings revision that judged it (an old event keeps its old rules
after they change), and the admin-only Audit page lists, filters, explains, verifies and exports the log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.db import open_database
from appliance.stations import events
from appliance.stations.contracts import InspectionEvent
from tests.console_support import login, served
from tests.helpers import API, wait_js

pytestmark = pytest.mark.browser

ZONES = [{"name": "left", "points": [[0, 0], [120, 0], [120, 240], [0, 240]]}]
RULES = [
    {"name": "two bolts", "zone": "left", "classes": ["bolt"], "condition": "==", "count": 2},
    {"name": "no crack", "classes": ["crack"], "condition": "absent"},
]


def _event(camera_id: int, revision: int, failing: list[str]) -> InspectionEvent:
    return InspectionEvent(
        camera_id=camera_id,
        ts=time.time(),
        mode="triggered",
        verdict="ng" if failing else "ok",
        failing_rules=failing,
        zones=[],
        model_id=7,
        model_version="onnx fp32 640px onnxruntime, built 2026-12-01T08:00:00+00:00",
        settings_revision=revision,
    )


def test_an_event_shows_what_judged_it_and_admins_audit_the_changes(
    page: Page, tmp_path: Path, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    with served(tmp_path) as (server, api):
        settings: dict[str, Any] = {
            "source_type": "file",
            "source": "/nowhere.avi",
            "zones": ZONES,
            "rules": RULES,
        }
        camera = api.call("POST", "/cameras", json={"name": "press 4", "settings": settings})
        first = api.call("GET", f"/cameras/{camera['id']}/revisions")[0]["id"]
        config = load_config(env={}, data_dir=str(server.data_dir))
        db = open_database(config.db_path)
        old_event = events.record_events(db, [_event(camera["id"], first, ["two bolts"])])[0]
        settings["rules"] = [{**RULES[0], "count": 3}]  # the line now wants three bolts, and no crack rule
        api.call("PUT", f"/cameras/{camera['id']}", json={"name": "press 4", "settings": settings})
        second = api.call("GET", f"/cameras/{camera['id']}/revisions")[0]["id"]
        new_event = events.record_events(db, [_event(camera["id"], second, [])])[0]
        db.conn.close()
        api.call("POST", "/users", json={"username": "vera", "password": "vera-password", "role": "viewer"})

        # The old event: the rules and zones in force then, the failing one marked, and the model's version.
        login(page, server, "events")
        page.get_by_test_id("event-row").and_(page.locator(f"[data-id='{old_event}']")).click()
        expect(page.get_by_test_id("revision-title")).to_contain_text(f"Settings revision {first}")
        expect(page.get_by_test_id("revision-title")).to_contain_text("replaced since")
        rules = page.get_by_test_id("revision-rule")
        expect(rules).to_have_count(2)
        expect(rules.nth(0)).to_contain_text("two bolts")
        expect(rules.nth(0)).to_contain_text("== 2")
        expect(rules.nth(0)).to_have_attribute("data-failing", "true")
        expect(rules.nth(1)).to_have_attribute("data-failing", "false")
        expect(page.get_by_test_id("revision-zone")).to_have_text("left: 4 points")
        expect(page.get_by_test_id("event-model")).to_contain_text("Model 7 · onnx fp32 640px onnxruntime")
        expect(page.get_by_test_id("revision-settings")).to_contain_text("source: /nowhere.avi")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(artifacts_dir / "event-judged-by.png"))
        # The new event: the rules as changed.
        page.get_by_test_id("event-row").and_(page.locator(f"[data-id='{new_event}']")).click()
        expect(page.get_by_test_id("revision-title")).to_contain_text(f"Settings revision {second}")
        expect(page.get_by_test_id("revision-rule")).to_have_count(1)
        expect(page.get_by_test_id("revision-rule")).to_contain_text("== 3")

        # The Audit page: every change, filtered to the camera's, with its before and after.
        page.goto(f"{server.url}/#/audit")
        expect(page.get_by_test_id("audit-row").first).to_be_visible()
        actions = page.get_by_test_id("audit-action-cell").all_text_contents()
        assert {"setupFirstAdmin", "createCamera", "putCamera", "createUser"} <= set(actions), actions
        page.get_by_test_id("audit-action").fill("putCamera")
        page.get_by_test_id("audit-action").press("Enter")
        wait_js(page, "location.hash.includes('action=putCamera')")
        expect(page.get_by_test_id("audit-row")).to_have_count(1)
        page.get_by_test_id("audit-row").click()
        change = page.get_by_test_id("audit-change").and_(page.locator("[data-field='settings.rules']"))
        expect(change).to_contain_text('"count":3')
        expect(change).to_contain_text("no crack")  # before: both rules
        expect(page.get_by_test_id("audit-detail")).to_contain_text("admin (admin) from 127.0.0.1")
        page.get_by_test_id("audit-verify").click()
        expect(page.get_by_test_id("audit-verify-result")).to_contain_text("Chain intact")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(artifacts_dir / "audit-page.png"))
        href = page.get_by_test_id("audit-export").get_attribute("href")
        assert href == f"{API}/audit/export?action=putCamera"
        exported = page.request.get(f"{server.url}{href}")
        assert exported.ok
        lines = [json.loads(line) for line in exported.text().splitlines()]
        assert [e["action"] for e in lines] == ["putCamera"] and len(lines[0]["hash"]) == 64

        # A viewer has no Audit page.
        page.get_by_test_id("logout").click()
        wait_js(page, "location.hash.startsWith('#/login')")
        response = page.request.post(
            f"{server.url}{API}/auth/login", data={"username": "vera", "password": "vera-password"}
        )
        assert response.ok
        page.goto(f"{server.url}/#/audit")
        expect(page.get_by_test_id("forbidden")).to_be_visible()
        expect(page.get_by_test_id("nav-audit")).to_have_count(0)
    assert watched["dialogs"] == []
    assert [e for e in watched["errors"] if "favicon" not in e] == []
