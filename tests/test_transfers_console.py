"""The Import page in a real Chromium, with a real server and a real worker: USB import, archive upload, exports."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console_support import login, served
from tests.helpers import ServerProcess
from tests.models import write_yolo_dataset
from tests.transfers_support import read_only_stick, zip_folder
from tests.workers import WorkerProcess

pytestmark = pytest.mark.browser


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, dict[str, Any]]]:
    """A server and a worker with the import root `media`, and the admin's dataset "parts" (class disc)."""
    media = tmp_path / "media"
    media.mkdir()
    env = {"APPLIANCE_IMPORT_ROOTS": str(media), "APPLIANCE_WORKER_POLL_S": "0.2"}
    with served(tmp_path, env) as (server, api):
        worker = WorkerProcess(server.data_dir, env={"APPLIANCE_IMPORT_ROOTS": str(media)}).start()
        try:
            yield server, media, api.dataset("parts", ["disc"])
        finally:
            worker.stop()


def test_import_page_usb_upload_and_exports(
    page: Page, appliance: tuple[ServerProcess, Path, dict[str, Any]], tmp_path: Path
) -> None:
    server, media, dataset = appliance
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    write_yolo_dataset(media / "usb0", count=6)
    other = tmp_path / "other"
    write_yolo_dataset(other, count=30)
    archive = tmp_path / "more.zip"
    archive.write_bytes(zip_folder(other))

    login(page, server, f"datasets/{dataset['id']}")
    page.get_by_test_id("tab-transfer").click()
    expect(page.get_by_test_id("source-row")).to_have_count(1)
    expect(page.get_by_test_id("source-count")).to_have_text("6")

    page.get_by_test_id("import-source").click()
    report = page.get_by_test_id("import-report")
    expect(report).to_contain_text("completed", timeout=30_000)
    expect(page.get_by_test_id("report-imported")).to_have_text("6")
    expect(page.get_by_test_id("report-classes")).to_contain_text("square")

    page.get_by_test_id("archive-file").set_input_files(str(archive))
    page.get_by_test_id("archive-upload").click()
    expect(page.get_by_test_id("report-duplicates")).to_have_text("6", timeout=30_000)
    expect(page.get_by_test_id("report-imported")).to_have_text("24")  # 30 in the archive, 6 already there
    # The upload's line follows its import to the end (it does not stay at "queued").
    expect(page.get_by_test_id("upload-state")).to_contain_text("completed")
    assert page.get_by_test_id("upload-progress").evaluate("el => el.value") == 1
    expect(page.get_by_test_id("import-job")).to_have_count(2)

    with page.expect_download() as download_info:
        page.get_by_test_id("export-yolo").click()
    saved = tmp_path / "export.zip"
    download_info.value.save_as(saved)
    with zipfile.ZipFile(saved) as exported:
        names = exported.namelist()
    assert "data.yaml" in names
    assert sum(n.startswith("images/") for n in names) == 30

    page.get_by_test_id("usb-export-format").select_option("coco")
    page.get_by_test_id("usb-export").click()
    expect(page.get_by_test_id("usb-export-state")).to_contain_text("Written", timeout=30_000)
    written = list((media / "usb0").glob("parts-coco-*.zip"))
    assert len(written) == 1 and zipfile.ZipFile(written[0]).testzip() is None
    assert errors == []


def test_usb_export_to_a_read_only_stick_shows_its_phase_and_cancels(
    page: Page, appliance: tuple[ServerProcess, Path, dict[str, Any]]
) -> None:
    """Nobody serves the write requests here: the export waits for appliance-usb-write, visibly, until cancelled."""
    server, media, dataset = appliance
    with read_only_stick(media / "STICK", {}) as stick:
        login(page, server, f"imports?dataset={dataset['id']}")
        row = page.get_by_test_id("source-row").filter(has_text="STICK")
        row.get_by_test_id("usb-export").click()
        state = page.get_by_test_id("usb-export-state")
        expect(state).to_contain_text("waiting for the USB write service", timeout=30_000)
        assert len(list((server.data_dir / "run" / "usb-requests").glob("*.request"))) == 1
        state.get_by_test_id("cancel-usb-export").click()
        expect(state).to_contain_text("cancelled", timeout=30_000)
        assert not list((server.data_dir / "run" / "usb-requests").glob("*.request"))  # withdrawn
        assert sorted(p.name for p in stick.iterdir()) == ["exports"]
