"""What the console says when the data disk is below its reserve, in a real Chromium: the banner on every page and
the Live page name it, inspections go on, and an event kept without its snapshot says why. A reserve larger than
the disk's free space puts the camera process in that state without filling a disk (tests/test_disk_full.py
fills a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.camera.publish import camera_dir, read_status
from appliance.config import load_config
from appliance.db import migrate, open_database
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, write_scenes
from tests.console_support import login, served
from tests.workers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCENES = [(15, [(1, 1), (1, 3)], []), (15, [(1, 1)], [])]
RULES = [{"name": "two squares", "classes": ["square"], "condition": "==", "count": 2, "min_confidence": 0.5}]
RESERVE_MB = 10**9  # more than any disk has free


def test_the_console_says_when_events_are_kept_without_snapshots(
    page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    video = write_scenes(tmp_path / "line.avi", SCENES, fps=15)
    onnx = build_colour_onnx(tmp_path / "colour" / "model_64.onnx")
    with served(tmp_path) as (server, api):
        config = load_config(env={}, data_dir=str(tmp_path / "data"), disk_min_free_mb=RESERVE_MB)
        db = open_database(config.db_path)
        migrate(db, config.db_path)
        deploy_model(config, db, onnx, None, "colour")
        settings = {
            "source": str(video),
            "confidence": 0.5,
            "rules": RULES,
            "mode": "interval",
            "interval_s": 0.5,
        }
        camera = api.call("POST", "/cameras", json={"name": "press", "settings": settings, "enabled": True})
        with camera_process(config):
            wait_for(
                lambda: (s := read_status(camera_dir(config.runtime_path, camera["id"]))) and s.storage_note,
                timeout=30,
                what="the camera's storage note",
            )
            login(page, server, f"live?camera={camera['id']}")
            note = "The data disk has less free space than its reserve"
            expect(page.get_by_test_id("live-storage")).to_contain_text(note, timeout=10_000)
            expect(page.get_by_test_id("live-storage")).to_contain_text("kept without snapshots")
            expect(page.get_by_test_id("live-verdict")).to_have_text("NG", timeout=10_000)  # verdicts go on
            banner = page.get_by_test_id("status-warning").filter(has_text="Camera: ")
            expect(banner).to_contain_text("Camera: the data disk has less free space than its reserve")
            page.screenshot(path=str(artifacts_dir / "live-below-disk-reserve.png"))
            page.goto(f"{server.url}/#/events")
            expect(page.get_by_test_id("event-no-snapshot")).to_contain_text(
                "No snapshot: the data disk had less free space than its reserve"
            )
        events = api.call("GET", "/events", params={"limit": 5})["items"]
        db.conn.close()
    assert events and all(e["snapshot"] is None and e["snapshot_missing"] == "disk_reserve" for e in events)
    assert errors == []
