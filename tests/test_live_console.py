"""The Live and Events pages in a real Chromium at 1366x768: the camera grid, the stream with boxes and zones,
the verdict and shift counters, zones drawn on the image, the rules editor, errors next to their form, trigger,
stop leaving nothing stale, and the event history with snapshots and "send to dataset"."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.db import migrate, open_database
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, write_scenes
from tests.console_support import fill_form, login, served
from tests.helpers import wait_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCENES = [(15, [(1, 1), (1, 3)], []), (15, [(1, 1)], [(6, 6)])]
RULES = [{"name": "two squares", "classes": ["square"], "condition": "==", "count": 2, "min_confidence": 0.5}]


def no_horizontal_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_live_and_events_pages(page: Page, tmp_path: Path, artifacts_dir: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    data = tmp_path / "data"
    video = write_scenes(tmp_path / "line.avi", SCENES, fps=15)
    onnx = build_colour_onnx(tmp_path / "colour" / "model_64.onnx")
    with served(tmp_path) as (server, api):
        http, headers = api.http, api.headers
        dataset = http.post(
            "/datasets", json={"name": "line", "classes": ["square", "disc"]}, headers=headers
        ).json()
        config = load_config(env={}, data_dir=str(data))
        db = open_database(config.db_path)
        migrate(db, config.db_path)
        deploy_model(config, db, onnx, None, "colour")
        settings = {
            "source_type": "file",
            "source": str(video),
            "confidence": 0.5,
            "rules": RULES,
            "debounce_frames": 2,
        }
        cam = http.post(
            "/cameras", json={"name": "press 1", "settings": settings, "enabled": True}, headers=headers
        ).json()
        other = http.post(
            "/cameras",
            json={"name": "press 2", "settings": {"source_type": "file", "source": str(video)}},
            headers=headers,
        ).json()
        with camera_process(config):
            page.set_viewport_size({"width": 1366, "height": 768})
            login(page, server, f"live?camera={cam['id']}")
            expect(page.get_by_test_id(f"camera-tile-{other['id']}")).to_contain_text("stopped")
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=20_000)
            wait_js(page, "document.querySelector('[data-testid=live-stream]').naturalWidth === 256")
            wait_js(
                page, "Number(document.querySelector('[data-testid=live-overlay]').dataset.boxes || 0) >= 2"
            )
            expect(page.get_by_test_id("live-verdict")).to_have_text("OK", timeout=10_000)
            expect(page.get_by_test_id("live-verdict")).to_have_text("NG", timeout=10_000)
            expect(page.get_by_test_id("live-failing")).to_contain_text("two squares")
            wait_js(page, "Number(document.querySelector('[data-testid=live-count-ng]').textContent) >= 1")
            # The stream fits the 1366x768 screen: nothing to scroll to see it, nothing wider than the window.
            box = page.get_by_test_id("live-stream").bounding_box()
            assert box is not None and box["y"] + box["height"] <= 768, box
            assert no_horizontal_overflow(page)
            page.screenshot(path=str(artifacts_dir / "live-page.png"))

            # A zone drawn on the image, saved in image pixels.
            page.get_by_test_id("zone-draw").click()
            page.get_by_test_id("zone-name").fill("left")
            overlay = page.get_by_test_id("live-overlay").bounding_box()
            assert overlay is not None
            for fx, fy in ((0.02, 0.02), (0.5, 0.02), (0.5, 0.98), (0.02, 0.98)):
                page.mouse.click(overlay["x"] + fx * overlay["width"], overlay["y"] + fy * overlay["height"])
                page.wait_for_timeout(300)  # separate clicks, not a double-click
            page.get_by_test_id("zone-finish").click()
            expect(page.get_by_test_id("zone-item")).to_contain_text("left (4 points)")
            zone = http.get(f"/cameras/{cam['id']}", headers=headers).json()["settings"]["zones"][0]
            assert zone["name"] == "left" and len(zone["points"]) == 4
            assert all(0 <= x <= 256 and 0 <= y <= 256 for x, y in zone["points"])
            assert 100 < zone["points"][1][0] < 156  # half way across a 256 px image
            wait_js(page, "document.querySelector('[data-testid=live-overlay]').dataset.zones === '1'")

            # Rules: a bad one is refused with a sentence under the rule at its field; a good one is saved.
            page.get_by_test_id("rule-add").click()
            row = page.get_by_test_id("rule-row").last
            fill_form(row, {"[name=name]": "few discs", "[name=zone]": "left", "[name=condition]": "between",
                            "[name=count]": "3", "[name=max_count]": "1"})  # fmt: skip
            page.get_by_test_id("rules-save").click()
            expect(page.get_by_test_id("rule-field-error")).to_have_text(
                "Rule “few discs”, Max: must be at least Count (3)."
            )
            expect(row.locator("[name=max_count]")).to_have_class("invalid")
            row.locator("[name=max_count]").fill("4")
            row.locator("[name=count]").fill("0")
            page.get_by_test_id("rules-save").click()
            expect(page.get_by_test_id("toast").last).to_have_text("Rules saved")  # the PUT has answered
            expect(page.get_by_test_id("rules-error")).to_have_text("")
            expect(page.get_by_test_id("rule-field-error")).to_have_count(0)
            rules = http.get(f"/cameras/{cam['id']}", headers=headers).json()["settings"]["rules"]
            assert rules[1] == {
                **rules[1],
                "name": "few discs",
                "zone": "left",
                "condition": "between",
                "count": 0,
                "max_count": 4,
            }

            # A trigger from the toolbar: the inspection's verdict is shown next to the buttons.
            page.get_by_test_id("live-trigger").click()
            expect(page.get_by_test_id("live-action-error")).to_contain_text("Inspection", timeout=10_000)

            # A bad source in the settings form: the reason stays next to the form, the camera keeps running.
            page.get_by_test_id("camera-source").fill("relative.avi")
            page.get_by_test_id("camera-save").click()
            expect(page.get_by_test_id("camera-settings-error")).to_contain_text("absolute path")
            expect(page.get_by_test_id("camera-settings").locator("small").first).to_contain_text(
                "0 = the camera's default"
            )

            # Stop: no frame, FPS or verdict left on screen as if live.
            page.get_by_test_id("live-stop").click()
            expect(page.get_by_test_id("live-state")).to_have_text("stopped", timeout=10_000)
            expect(page.get_by_test_id("live-placeholder")).to_be_visible()
            assert (
                page.evaluate("document.querySelector('[data-testid=live-stream]').getAttribute('src')")
                is None
            )
            expect(page.get_by_test_id("live-fps")).to_have_text("–")
            expect(page.get_by_test_id("live-verdict")).to_have_text("—")
            assert page.evaluate("document.querySelector('[data-testid=live-overlay]').dataset.boxes") == "0"

            # Events: the history, one event with its snapshot and boxes, sent to a dataset with pre-labels.
            page.goto(f"{server.url}/#/events?verdict=ng")
            expect(page.get_by_test_id("event-row").first).to_be_visible()
            expect(page.get_by_test_id("event-detail")).to_contain_text("Failing: two squares")
            wait_js(
                page, "Number(document.querySelector('[data-testid=event-overlay]')?.dataset.boxes || 0) >= 2"
            )
            assert no_horizontal_overflow(page)
            page.screenshot(path=str(artifacts_dir / "events-page.png"))
            page.get_by_test_id("event-dataset").select_option(str(dataset["id"]))
            page.get_by_test_id("event-send").click()
            expect(page.get_by_test_id("event-send-result")).to_contain_text("pre-label")
            images = http.get(f"/datasets/{dataset['id']}/images", headers=headers).json()["items"]
            assert len(images) == 1
            assert errors == []
