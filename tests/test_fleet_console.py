"""The Fleet page and the fleet's buttons in a real Chromium against a real server, with the real fleet process of
this box and of a second box on a real Mosquitto and SeaweedFS: both boxes listed from the broker, a key
trusted through the form, a bundle imported from the store and rolled out from the page, a bundle downloaded
from the Models page and one uploaded there (refused with its reason when its key is not trusted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.fleet import publishing
from appliance.fleet.agent import FleetProcess
from appliance.fleet.keys import box_key, trust_key
from appliance.fleet.schemas import BundleCreate, TrustedKeyCreate
from tests.console_support import login, served
from tests.fleet_support import Box, Seaweed, flip_byte, need_weed
from tests.line_peers import Mosquitto, in_thread

pytestmark = [pytest.mark.browser]


def test_fleet_page(page: Page, watched: dict[str, list[str]], tmp_path: Path, artifacts_dir: Path) -> None:
    need_weed()
    broker = Mosquitto(tmp_path / "broker").start()
    store = Seaweed(tmp_path / "store").start()
    store.client().create_bucket(Bucket="fleet")
    fleet_env = {"fleet_broker_host": "127.0.0.1", "fleet_broker_port": broker.port, "fleet_poll_s": 1.0}
    try:
        config = {**store.store_config(tmp_path / "here"), **fleet_env}
        env = {f"APPLIANCE_{k.upper()}": str(v) for k, v in config.items()}
        with served(tmp_path, {**env, "APPLIANCE_BOX_ID": "press-1", "APPLIANCE_FLEET_TAGS": "press"}) as (
            server,
            api,
        ):
            # This box's own fleet process (the one `appliance run` would start) on the served data folder.
            here = load_config(
                env={}, data_dir=str(tmp_path / "data"), box_id="press-1", fleet_tags=["press"], **config
            )
            other = Box(tmp_path / "other", "press-2", **store.store_config(tmp_path / "other"), **fleet_env)
            try:
                with (
                    in_thread(FleetProcess(here), "fleet-here"),
                    in_thread(FleetProcess(other.config), "fleet-other"),
                ):
                    mine = box_key(here).public
                    trust_key(
                        other.db, other.config, TrustedKeyCreate(public_key=mine.line, name="press-1"), None
                    )
                    published = publishing.publish_model(
                        other.db,
                        other.config,
                        other.colour_model("colour"),
                        other.admin,
                        BundleCreate(name="colour"),
                    )
                    login(page, server, "fleet")
                    boxes = page.get_by_test_id("fleet-box")
                    expect(boxes).to_have_count(2, timeout=20_000)
                    expect(page.locator('[data-testid=fleet-box][data-box="press-1"]')).to_contain_text(
                        "this box"
                    )
                    expect(
                        page.locator('[data-testid=fleet-box][data-box="press-2"] [data-testid=box-state]')
                    ).to_have_text("online")
                    expect(
                        page.locator('[data-testid=fleet-box][data-box="press-2"] [data-testid=box-model]')
                    ).to_contain_text("colour")
                    expect(page.get_by_test_id("broker-state")).to_have_text("connected")
                    # The other box's key: untrusted first, so its bundle cannot be imported.
                    key = box_key(other.config).public
                    bundle_row = page.locator('[data-testid=store-bundle][data-name="colour"]')
                    expect(bundle_row).to_contain_text("v1")
                    bundle_row.get_by_test_id("store-import").click()
                    expect(page.get_by_test_id("fleet-error")).to_contain_text("does not trust")
                    page.get_by_test_id("key-name").fill("press-2")
                    page.get_by_test_id("key-value").fill(key.line)
                    page.get_by_test_id("key-id").fill(key.id)
                    page.get_by_test_id("key-add").click()
                    expect(page.locator(f'[data-testid=trusted-key][data-id="{key.id}"]')).to_contain_text(
                        "press-2"
                    )
                    bundle_row.get_by_test_id("store-import").click()
                    expect(bundle_row).to_contain_text("model", timeout=10_000)
                    # Publishing a model of this box from the page (the imported one: its bundle is already there).
                    page.reload()
                    page.get_by_test_id("publish").click()
                    expect(page.get_by_test_id("publish-result")).to_contain_text("colour v1 is in the store")
                    # A rollout of it to both boxes from the page: one canary (press-1), then the other.
                    bundle_row.get_by_test_id("store-rollout").click()
                    page.get_by_test_id("rollout-canary").fill("1")
                    page.get_by_test_id("rollout-soak").fill("0")
                    page.get_by_test_id("rollout-submit").click()
                    card = page.get_by_test_id("rollout")
                    expect(card).to_have_count(1)
                    expect(card).to_have_attribute("data-state", "done", timeout=60_000)
                    expect(card.get_by_test_id("rollout-box-row")).to_have_count(2)
                    page.screenshot(path=artifacts_dir / "page-fleet.png", full_page=True)
                    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

                    # Models page: this box's model as a signed bundle; the other box's bundle altered: refused.
                    page.goto(f"{server.url}/#/models")
                    expect(page.get_by_test_id("model-row")).to_have_count(1)
                    page.get_by_test_id("bundle-model").select_option("1")
                    with page.expect_download() as download:
                        page.get_by_test_id("bundle-download").click()
                    assert download.value.suggested_filename == f"colour-v{published.version}.bundle"
                    altered = flip_byte(
                        other.config.data_path / "models" / "1" / "model.bundle",
                        tmp_path / "altered.bundle",
                        3000,
                    )
                    page.get_by_test_id("bundle-file").set_input_files(str(altered))
                    expect(page.get_by_test_id("bundle-upload-result")).to_contain_text("altered")
            finally:
                other.close()
    finally:
        store.stop()
        broker.stop()
    assert watched["dialogs"] == []
    assert all("status of 422" in e for e in watched["errors"]), watched[
        "errors"
    ]  # the two refusals asked for
