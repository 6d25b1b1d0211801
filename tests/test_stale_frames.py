"""A frame from before an outage is never passed off as live: /cameras/{id}/frame keeps answering the last frame
(the operator sees what the camera saw last) with its capture time, its age and `X-Frame-Stale: true`, and the
Live page marks that tile stale; with the source back, fresh frames are live again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from playwright.sync_api import Page, expect

from appliance.caller import CurrentUser
from appliance.camera.publish import FRAME_STALE_S, camera_dir, read_frame
from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.server import create_app
from appliance.stations import cameras
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.camera_sources import MjpegServer, camera_process
from tests.console_support import login, served
from tests.helpers import API, LOCAL_URL, setup_admin
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")


def url_camera(config: Any, url: str) -> int:
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    settings = CameraSettings(source_type="url", source=url, open_timeout_ms=1000, read_timeout_ms=1000)
    try:
        return cameras.create_camera(db, CameraWrite(name="press", enabled=True, settings=settings), ADMIN).id
    finally:
        db.conn.close()


def test_the_frame_during_an_outage_says_how_old_it_is(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))
    stream = MjpegServer(fps=15).start()
    camera_id = url_camera(config, stream.url)
    with (
        camera_process(config),
        TestClient(app=create_app(config), base_url=LOCAL_URL, raise_server_exceptions=False) as client,
    ):
        admin = setup_admin(client)
        frame = lambda: client.get(f"{API}/cameras/{camera_id}/frame", headers=admin)  # noqa: E731
        status = lambda: client.get(f"{API}/cameras/{camera_id}/status", headers=admin).json()  # noqa: E731
        wait_for(lambda: status()["state"] == "running", timeout=30, what="frames")
        live = wait_for(lambda: (r := frame()).status_code == 200 and r, timeout=10)
        assert live.headers["x-frame-stale"] == "false" and int(live.headers["x-frame-age-ms"]) < 1500
        assert abs(float(live.headers["x-frame-captured-at"]) - time.time()) < 1.5
        stream.stop()
        wait_for(lambda: status()["state"] == "reconnecting", timeout=20, what="the outage")
        last = read_frame(camera_dir(config.runtime_path, camera_id))
        assert last is not None
        time.sleep(FRAME_STALE_S + 0.5)
        old = frame()
        stale_status = status()
        stream = MjpegServer(fps=15, port=stream.port).start()
        try:
            wait_for(lambda: status()["state"] == "running", timeout=30, what="the source back")
            fresh = wait_for(lambda: (r := frame()).headers["x-frame-stale"] == "false" and r, timeout=10)
        finally:
            stream.stop()
    assert old.status_code == 200 and old.content == last.jpeg  # what the camera saw last, still there
    assert old.headers["x-frame-stale"] == "true"
    assert float(old.headers["x-frame-captured-at"]) == pytest.approx(last.meta.ts, abs=0.001)
    assert int(old.headers["x-frame-age-ms"]) >= FRAME_STALE_S * 1000
    assert stale_status["last_frame_at"] == pytest.approx(last.meta.ts, abs=0.5)
    assert fresh.content != old.content and int(fresh.headers["x-frame-age-ms"]) < 1500


@pytest.mark.browser
def test_the_live_grid_marks_a_stale_tile(page: Page, tmp_path: Path) -> None:
    stream = MjpegServer(fps=15).start()
    try:
        with served(tmp_path) as (server, api):
            config = load_config(env={}, data_dir=str(tmp_path / "data"))
            camera_id = url_camera(config, stream.url)
            with camera_process(config):
                login(page, server, f"live?camera={camera_id}")
                tile = page.get_by_test_id(f"camera-tile-{camera_id}")
                expect(tile.get_by_test_id("tile-state")).to_have_text("running", timeout=30_000)
                expect(tile).to_have_attribute("data-stale", "false", timeout=10_000)
                expect(tile.get_by_test_id("tile-stale")).to_be_hidden()
                stream.stop()
                expect(tile).to_have_attribute("data-stale", "true", timeout=20_000)
                expect(tile.get_by_test_id("tile-stale")).to_contain_text("stale")
                expect(tile.locator("img")).to_be_visible()  # the last picture stays, marked, not hidden
                expect(page.get_by_test_id("live-stale")).to_be_visible()
    finally:
        stream.stop()
