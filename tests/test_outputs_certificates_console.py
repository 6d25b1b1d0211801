"""The OPC UA trust list on the Outputs page, in a real Chromium against a real server and the real outputs
process: a SCADA client with an unknown certificate is refused, shows up as refused, is trusted with one click
and then connects; a certificate file added through the page is trusted; a removed one is refused again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from tests.console_support import login, served
from tests.helpers import free_port
from tests.line_peers import BoxProcess, make_opcua_certificates, opcua_secure_session, run_async
from tests.test_opcua_security import PASSWORD
from tests.workers import wait_for

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_opcua_certificates(tmp_path_factory.mktemp("certificates"))


def connects(port: int, folder: Path, name: str) -> bool:
    url = f"opc.tcp://127.0.0.1:{port}/appliance/"
    return run_async(opcua_secure_session(url, folder, name, PASSWORD))["refused_at"] is None


def test_the_trust_list_on_the_outputs_page(
    page: Page,
    watched: dict[str, list[str]],
    tmp_path: Path,
    certificates: Path,
    artifacts_dir: Path,
) -> None:
    port = free_port()
    outputs: BoxProcess | None = None
    with served(tmp_path) as (server, api):
        settings: dict[str, Any] = {
            "kind": "opcua", "host": "127.0.0.1", "port": port, "username": "plc", "password": PASSWORD,
            "security": ["basic256sha256"], "certificate": str(certificates / "box.der"),
            "private_key": str(certificates / "box.pem"),
        }  # fmt: skip
        created = api.http.post("/outputs", json={"name": "scada", "settings": settings}, headers=api.headers)
        assert created.status_code == 201, created.text
        output_id = created.json()["id"]
        outputs = BoxProcess("outputs", load_config(env={}, data_dir=str(tmp_path / "data"))).start()
        try:
            status = lambda: api.http.get(f"/outputs/{output_id}", headers=api.headers).json()["status"]  # noqa: E731
            wait_for(lambda: status()["connected"], timeout=30, what="the OPC UA server listening")
            assert not connects(port, certificates, "scada")  # unknown: refused

            login(page, server, "outputs")
            page.get_by_test_id("output-certificates").click()
            dialog = page.get_by_test_id("certificates-dialog")
            refused = dialog.locator('[data-testid="certificate-row"][data-state="refused"]')
            expect(refused).to_contain_text("urn:line:scada")
            refused.get_by_test_id("certificate-trust").click()
            expect(dialog.locator('[data-testid="certificate-row"][data-state="trusted"]')).to_contain_text(
                "urn:line:scada"
            )
            assert connects(port, certificates, "scada")

            dialog.get_by_test_id("certificate-file").set_input_files(str(certificates / "hmi.der"))
            expect(dialog.get_by_test_id("certificate-pem")).not_to_have_value("")
            dialog.get_by_test_id("certificate-add").click()
            hmi = dialog.locator('[data-testid="certificate-row"]', has_text="urn:line:hmi")
            expect(hmi.get_by_test_id("certificate-state")).to_have_text("trusted")
            page.screenshot(path=artifacts_dir / "page-outputs-certificates.png")
            assert connects(port, certificates, "hmi")

            dialog.get_by_test_id("certificate-file").set_input_files(str(certificates / "hmi.der"))
            expect(dialog.get_by_test_id("certificate-pem")).not_to_have_value("")
            dialog.get_by_test_id("certificate-add").click()  # the same file again: refused, said next to it
            expect(dialog.get_by_test_id("certificates-error")).to_contain_text("trusted already")
            scada = dialog.locator('[data-testid="certificate-row"]', has_text="urn:line:scada")
            scada.get_by_test_id("certificate-remove").click()
            expect(scada).to_have_count(0)
            assert not connects(port, certificates, "scada")
            dialog.get_by_test_id("certificates-close").click()
            expect(dialog).to_have_count(0)
        finally:
            outputs.stop()
    assert watched["dialogs"] == [] and watched["errors"] == [
        "Failed to load resource: the server responded with a status of 409 (Conflict)"
    ]
