"""The Outputs page in a real Chromium at 1366x768 against a real server, a real Mosquitto and the real outputs
process: add an MQTT output through the form, see it connect, test it, never see its password again, the
trigger sources per camera, and a refused webhook with the error next to its form."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from tests.console_support import fill_form, login, served
from tests.line_peers import BoxProcess, Mosquitto

pytestmark = [pytest.mark.browser]
SECRET = "broker-secret-for-the-page"


def test_outputs_page(page: Page, watched: dict[str, list[str]], tmp_path: Path, artifacts_dir: Path) -> None:
    data = tmp_path / "data"
    broker = Mosquitto(tmp_path / "broker").start()
    outputs: BoxProcess | None = None
    try:
        with served(tmp_path, {"APPLIANCE_BOX_ID": "press-line"}) as (server, api):
            http, headers = api.http, api.headers
            camera = http.post(
                "/cameras", json={"name": "press 1", "settings": {"mode": "triggered"}}, headers=headers
            ).json()
            outputs = BoxProcess(
                "outputs", load_config(env={}, data_dir=str(data), box_id="press-line")
            ).start()
            login(page, server, "outputs")
            expect(page.get_by_test_id("outputs-table")).to_contain_text("No outputs yet")

            page.get_by_test_id("output-add").click()
            fill_form(page, {"output-name": "line broker", "output-field-host": "127.0.0.1",
                             "output-field-port": str(broker.port), "output-field-username": "box",
                             "output-field-password": SECRET})  # fmt: skip
            page.get_by_test_id("output-save").click()
            row = page.get_by_test_id("output-row")
            expect(row).to_contain_text("line broker")
            expect(row.get_by_test_id("output-target")).to_contain_text(f"mqtt://127.0.0.1:{broker.port}")
            expect(row.get_by_test_id("output-connected")).to_be_visible(timeout=15_000)
            row.get_by_test_id("output-test").click()
            # The Test is the row's latest state (one state per row, issue 23).
            expect(row.get_by_test_id("output-state")).to_contain_text("Test OK: connected", timeout=10_000)
            expect(page.get_by_test_id("trigger-sources")).to_contain_text(
                f"publish to appliance/press-line/cameras/{camera['id']}/trigger"
            )
            page.screenshot(path=artifacts_dir / "page-outputs.png")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            # Edit: the stored password is never shown; saving without typing one keeps it.
            row.get_by_test_id("output-edit").click()
            expect(page.get_by_test_id("output-field-password")).to_have_value("")
            expect(page.get_by_test_id("output-dialog")).to_contain_text("stored: leave empty to keep")
            page.get_by_test_id("output-field-keepalive_s").fill("45")
            page.get_by_test_id("output-save").click()
            expect(page.get_by_test_id("output-dialog")).to_have_count(0)
            stored = http.get("/outputs", headers=headers).json()[0]
            assert stored["secrets_set"] == ["password"] and stored["settings"]["keepalive_s"] == 45
            assert SECRET not in page.content()

            # A webhook without a long enough key: refused, the reason next to the form, nothing added.
            page.get_by_test_id("output-add").click()
            fill_form(page, {"output-kind": "webhook", "output-name": "mes",
                             "output-field-url": "https://mes.example/in",
                             "output-field-secret": "short"})  # fmt: skip
            page.get_by_test_id("output-save").click()
            expect(page.get_by_test_id("output-form-error")).to_contain_text("settings.secret")
            page.keyboard.press("Escape")
            expect(page.get_by_test_id("output-row")).to_have_count(1)
    finally:
        if outputs is not None:
            outputs.stop()
        broker.stop()
    # The one refusal the test asked for is the browser's only complaint.
    assert watched["dialogs"] == [] and watched["errors"] == [
        "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    ]
