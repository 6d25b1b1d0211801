"""The Live page's first-hour traps (issue 23) with a real camera process and a real model on a stream that goes
away, in Chromium at 1366x768: the header tells the truth when the source is lost (the model, and that the
source is retried, how often and since when), "Draw a zone" brings the image and its bar into view, a trigger's
verdict is in the success style, Start is off while the camera runs, and the tile keeps its name on one line."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.db import migrate, open_database
from tests.camera_sources import MjpegServer, build_colour_onnx, camera_process, deploy_model, scene
from tests.console_support import login, served
from tests.helpers import wait_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OK_COLOUR = "rgb(81, 207, 102)"  # --ok


def in_view(page: Page, testid: str) -> bool:
    return bool(
        page.evaluate(
            """(testid) => { const r = document.querySelector(`[data-testid=${testid}]`).getBoundingClientRect();
                             return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }""",
            testid,
        )
    )


def test_live_header_zone_drawing_trigger_and_buttons_as_a_new_user_meets_them(
    page: Page, tmp_path: Path, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    frames = [cv2.imencode(".jpg", scene([(1, 1)], [(5, 5)], seed=i))[1].tobytes() for i in range(4)]
    stream = MjpegServer(fps=15, frames=frames).start()
    onnx = build_colour_onnx(tmp_path / "colour" / "model_64.onnx")
    try:
        with served(tmp_path) as (server, api):
            config = load_config(env={}, data_dir=str(tmp_path / "data"))
            db = open_database(config.db_path)
            migrate(db, config.db_path)
            model_id = deploy_model(config, db, onnx, None, "colour")
            settings = {
                "source_type": "url",
                "source": stream.url,
                "read_timeout_ms": 1000,
                "open_timeout_ms": 1000,
            }
            camera = api.call(
                "POST", "/cameras", json={"name": "Station / A", "settings": settings, "enabled": True}
            )
            with camera_process(config):
                login(page, server, f"live?camera={camera['id']}")
                expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=20_000)
                expect(page.get_by_test_id("live-model")).to_contain_text(f"model colour (#{model_id})")
                # The tile says "Station / A" on one line; Start is off while the camera runs.
                tile_lines = page.evaluate(
                    """() => { const r = document.createRange();
                               r.selectNodeContents(document.querySelector('[data-testid=tile-name]'));
                               return new Set([...r.getClientRects()].map((q) => Math.round(q.top))).size; }"""
                )
                assert tile_lines == 1
                expect(page.get_by_test_id("tile-name")).to_have_text("Station / A")
                expect(page.get_by_test_id("live-start")).to_be_disabled()
                expect(page.get_by_test_id("live-stop")).to_be_enabled()

                # A trigger's verdict is news, not an error: the success style.
                page.get_by_test_id("live-trigger").click()
                message = page.get_by_test_id("live-action-error")
                expect(message).to_have_text(re.compile(r"^Inspection \d+: (OK|NG)"), timeout=10_000)
                expect(message).to_have_css("color", OK_COLOUR)

                # "Draw a zone" sits below the fold; pressing it brings the bar and the image into view.
                draw = page.get_by_test_id("zone-draw")
                draw.scroll_into_view_if_needed()
                assert not in_view(page, "live-overlay")
                draw.click()
                expect(page.get_by_test_id("zone-bar")).to_be_visible()
                assert in_view(page, "zone-bar") and in_view(page, "live-overlay")
                expect(page.get_by_test_id("zone-name")).to_be_focused()
                page.get_by_test_id("zone-name").fill("left half")
                box = page.get_by_test_id("live-overlay").bounding_box()
                assert box is not None
                for fx, fy in ((0.05, 0.05), (0.5, 0.05), (0.5, 0.95)):
                    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                    page.wait_for_timeout(300)  # separate clicks, not a double-click
                page.screenshot(path=artifacts_dir / "live-zone-drawing.png")
                page.get_by_test_id("zone-finish").click()
                expect(page.get_by_test_id("zone-item")).to_contain_text("left half (3 points)")

                # The source goes away: the header keeps the model and says the source is being retried.
                stream.stop()
                expect(page.get_by_test_id("live-state")).to_have_text("reconnecting", timeout=20_000)
                expect(page.get_by_test_id("live-model")).to_contain_text(f"model colour (#{model_id})")
                source = page.get_by_test_id("live-source")
                expect(source).to_have_text(
                    re.compile(r"^source lost, retrying: [2-9]\d* times since \d\d:\d\d:\d\d"), timeout=20_000
                )
                expect(page.get_by_test_id("live-model")).not_to_contain_text("no model deployed")
                status = api.call("GET", f"/cameras/{camera['id']}/status")
                assert status["reconnects"] >= 2 and status["model_id"] == model_id
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=artifacts_dir / "live-source-lost.png")

                # Stop: Start comes back, Stop goes off.
                page.get_by_test_id("live-stop").click()
                expect(page.get_by_test_id("live-state")).to_have_text("stopped", timeout=10_000)
                expect(page.get_by_test_id("live-start")).to_be_enabled()
                expect(page.get_by_test_id("live-stop")).to_be_disabled()
                expect(source).to_have_text("")
                wait_js(
                    page, "document.querySelector('[data-testid=live-stream]').getAttribute('src') === null"
                )
    finally:
        stream.stop()
    assert watched["errors"] == [], watched["errors"]
