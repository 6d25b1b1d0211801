"""A GigE Vision camera from the console in a real Chromium, against Aravis' simulator on a loopback address of
its own: found by discovery in the camera form, added, started, its GenICam settings refused with the camera's
range and then applied and shown as read back from the camera, and the camera killed and started again: the
Live page says what happened meanwhile and the camera comes back by itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from tests.camera_sources import camera_process
from tests.console_support import login, served
from tests.gige_simulator import needs_simulator, simulators

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_simulator]


def test_a_gige_camera_is_found_set_up_and_recovers_from_the_console(
    page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with simulators(tmp_path) as (sim,), served(tmp_path) as (server, api):
        config = load_config(env={}, data_dir=str(tmp_path / "data"))
        with camera_process(config):
            page.set_viewport_size({"width": 1366, "height": 768})
            login(page, server, "live")
            # Discovery in the camera form: vendor, model, serial and address of the camera on its address.
            page.get_by_test_id("camera-add-type").select_option("gige")
            page.get_by_test_id("genicam-discover").click()
            row = page.locator(f"[data-testid=genicam-found-row][data-serial='{sim.serial}']")
            expect(row).to_contain_text("Aravis", timeout=15_000)
            expect(row).to_contain_text("Fake")
            expect(row).to_contain_text(sim.address)
            row.get_by_test_id("genicam-use").click()
            expect(page.get_by_test_id("camera-add-source")).to_have_value(sim.source)
            expect(page.get_by_test_id("camera-add-name")).to_have_value(f"Fake {sim.serial}")
            page.get_by_test_id("camera-add-submit").click()
            page.get_by_test_id("live-start").click()
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=20_000)
            panel = page.get_by_test_id("genicam-panel")
            expect(panel.get_by_test_id("genicam-device")).to_contain_text(f"serial {sim.serial}")
            expect(panel.get_by_test_id("genicam-applied-pixel-format")).to_contain_text("Mono8")

            # A value outside the camera's range is refused next to the form, with the range; a good one is
            # written to the camera and shown as read back from it.
            form = page.get_by_test_id("camera-settings")
            expect(form.get_by_test_id("genicam-settings")).to_be_visible()
            expect(form.get_by_test_id("genicam-settings")).to_contain_text("this camera: 10..10000000 µs")
            form.get_by_test_id("genicam-exposure_us").fill("20000000")
            form.get_by_test_id("camera-save").click()
            expect(page.get_by_test_id("camera-settings-error")).to_contain_text(
                "outside this camera's range 10..10000000 us"
            )
            form.get_by_test_id("genicam-exposure_us").fill("20000")
            form.get_by_test_id("genicam-gain").fill("3")
            form.get_by_test_id("camera-save").click()
            expect(page.get_by_test_id("camera-settings-error")).to_have_text("")
            expect(panel.get_by_test_id("genicam-applied-exposure")).to_contain_text(
                "20000 µs", timeout=20_000
            )
            expect(panel.get_by_test_id("genicam-applied-gain")).to_contain_text("3")
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=20_000)
            frames = panel.get_by_test_id("genicam-transport-frames").locator(".big")
            expect(frames).not_to_have_text("0", timeout=10_000)
            expect(panel.get_by_test_id("genicam-transport-frames_lost").locator(".big")).to_have_text("0")
            page.screenshot(path=str(artifacts_dir / "live-gige.png"), full_page=True)

            # The camera goes away: the page says so while it is gone, and once it is back.
            sim.kill()
            expect(page.get_by_test_id("live-state")).to_have_text("reconnecting", timeout=20_000)
            expect(page.get_by_test_id("live-error")).to_contain_text("stopped answering")
            expect(panel.get_by_test_id("genicam-incidents")).to_contain_text("stopped answering")
            sim.start()
            expect(page.get_by_test_id("live-state")).to_have_text("running", timeout=30_000)
            expect(panel.get_by_test_id("genicam-incident").first).to_contain_text(
                "reconnected to Aravis Fake"
            )
            expect(panel.get_by_test_id("genicam-applied-exposure")).to_contain_text("20000 µs")
            page.screenshot(path=str(artifacts_dir / "live-gige-recovered.png"))
    assert errors == []
