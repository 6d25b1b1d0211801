"""The Live page in a real Chromium: the MJPEG stream, boxes from the WebSocket, stats, capture, settings."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from appliance.camera import service
from appliance.camera.runner import CameraRunner
from appliance.camera.schemas import CameraSettings
from appliance.config import load_config
from appliance.db import migrate, open_database
from tests.camera_sources import MjpegServer, deploy_model, write_video
from tests.helpers import ADMIN, API, ServerProcess, auth, wait_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_live_page_streams_draws_boxes_captures_and_changes_source(
    page: Page, tmp_path: Path, tiny_onnx: Path, tiny_yolo: Path, artifacts_dir: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    data = tmp_path / "data"
    source = MjpegServer(fps=15, size=320).start()
    video = write_video(tmp_path / "clip.avi", count=15, size=192, fps=15)
    with ServerProcess(data) as server:
        http = httpx.Client(base_url=server.url + API, timeout=10)
        headers = auth(http.post("/auth/setup", json=server.setup_body()).json()["access_token"])
        dataset = http.post(
            "/datasets", json={"name": "line", "classes": ["square", "disc"]}, headers=headers
        ).json()
        config = load_config(env={}, data_dir=str(data))
        db = open_database(config.db_path)
        migrate(db, config.db_path)
        model_id = deploy_model(config, db, tiny_onnx, tiny_yolo, "tiny")
        service.store_settings(
            db, CameraSettings(source_type="url", source=source.url, enabled=True, confidence=0.001)
        )
        runner = CameraRunner(config)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            assert page.request.post(f"{server.url}{API}/auth/login", data=ADMIN).ok
            page.set_viewport_size({"width": 1366, "height": 900})
            page.goto(f"{server.url}/#/live")
            expect(page.get_by_test_id("nav-live")).to_be_visible()
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=20_000)
            # The MJPEG stream decodes in the <img>; the overlay has the frame's size and the model's boxes.
            wait_js(page, "document.querySelector('[data-testid=live-stream]').naturalWidth === 320")
            wait_js(
                page, "Number(document.querySelector('[data-testid=live-overlay]').dataset.boxes || 0) > 0"
            )
            assert page.evaluate("document.querySelector('[data-testid=live-overlay]').width") == 320
            wait_js(page, "parseFloat(document.querySelector('[data-testid=live-fps]').textContent) > 0")
            expect(page.get_by_test_id("live-latency-inference")).to_contain_text("ms")
            expect(page.get_by_test_id("live-latency-frame_age")).to_contain_text("ms")
            expect(page.get_by_test_id("live-model")).to_contain_text(f"model {model_id}")
            page.screenshot(path=str(artifacts_dir / "live-page.png"))

            # Capture into the dataset: an image with the model's boxes as pre-labels.
            page.get_by_test_id("live-capture-dataset").select_option(str(dataset["id"]))
            page.get_by_test_id("live-capture").click()
            expect(page.get_by_test_id("toast").last).to_contain_text("Saved as image")
            images = http.get(f"/datasets/{dataset['id']}/images", headers=headers).json()["items"]
            assert len(images) == 1
            boxes = http.get(f"/images/{images[0]['id']}/annotations", headers=headers).json()["boxes"]
            assert boxes and all(b["source"] == "model" for b in boxes)

            # The settings form switches the source; the camera follows without a restart.
            page.get_by_test_id("live-source-type").select_option("file")
            page.get_by_test_id("live-source").fill(str(video))
            page.get_by_test_id("live-save").click()
            expect(page.get_by_test_id("toast").last).to_contain_text("saved")
            wait_js(page, "document.querySelector('[data-testid=live-overlay]').width === 192")
            assert service.get_settings(db).settings.confidence == pytest.approx(0.001)

            # A bad source is refused with the server's reason.
            page.get_by_test_id("live-source-type").select_option("url")
            page.get_by_test_id("live-source").fill("ftp://nowhere")
            page.get_by_test_id("live-save").click()
            expect(page.get_by_test_id("live-settings-error")).to_contain_text("rtsp://")

            # Stop and start from the toolbar.
            page.get_by_test_id("live-stop").click()
            expect(page.get_by_test_id("live-state")).to_have_text("stopped", timeout=10_000)
            page.get_by_test_id("live-start").click()
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=15_000)
            assert errors == []
        finally:
            runner.stop.set()
            thread.join(15)
            source.stop()
