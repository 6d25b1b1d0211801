"""USB export jobs: the worker stages the archive and writes it to a folder, or hands it to the write service.

A tmpfs mounted read-only under a temporary media root stands for the stick (mounted as usb-mount.sh mounts
drives); a thread runs the real script whenever the request folder is not empty, as
appliance-usb-write.path does on the device. Needs root (mount); skipped with the reason elsewhere.
The privileged side alone is tested in test_usb_write_service.py.
"""

from __future__ import annotations

import subprocess
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config
from appliance.transfers import usb_write
from tests import transfers_support
from tests.helpers import API, create_dataset
from tests.models import write_yolo_dataset
from tests.transfers_support import (
    assert_read_only,
    import_config,
    import_folder,
    run_jobs,
    serve,
    stick_files,
)
from tests.workers import WorkerProcess, wait_for

IMAGES = 6
stick = transfers_support.stick  # fixture: a read-only tmpfs at <media>/STICK


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return import_config(tmp_path, usb_write_timeout_s=60.0)


@pytest.fixture
def media(config: Config) -> Path:
    return Path(config.import_roots[0])


class PathUnit:
    """Stands in for appliance-usb-write.path: runs the script whenever the request folder is not empty."""

    def __init__(self, config: Config, media: Path) -> None:
        self.config, self.media = config, media
        self.stop = threading.Event()
        self.runs: list[subprocess.CompletedProcess[str]] = []
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        requests = usb_write.request_dir(self.config)
        while not self.stop.is_set():
            if requests.is_dir() and any(requests.iterdir()):
                self.runs.append(serve(self.config, self.media))
            time.sleep(0.05)

    def __enter__(self) -> PathUnit:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def dataset(client: Any, admin: dict[str, str], config: Config, media: Path) -> dict[str, Any]:
    write_yolo_dataset(media / "original", count=IMAGES, size=64)
    created = create_dataset(client, admin, name="parts", classes=["square", "disc"])
    job = import_folder(client, admin, config, created["id"], media / "original")
    assert job["result"]["imported"] == IMAGES
    return created


def queue_export(client: Any, admin: dict[str, str], dataset_id: int, path: Path, fmt: str = "yolo") -> int:
    response = client.post(
        f"{API}/datasets/{dataset_id}/exports/usb", json={"path": str(path), "format": fmt}, headers=admin
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def get_export(client: Any, admin: dict[str, str], job_id: int) -> dict[str, Any]:
    return client.get(f"{API}/usb-exports/{job_id}", headers=admin).json()


# --- end to end ---------------------------------------------------------------------------------


def test_export_reaches_a_read_only_stick_through_the_write_service(
    client, admin, config, media, stick, dataset, tmp_path
):
    worker = WorkerProcess(
        config.data_path,
        env={
            "APPLIANCE_RUNTIME_DIR": str(config.runtime_path),
            "APPLIANCE_IMPORT_ROOTS": str(media),
            "APPLIANCE_USB_WRITE_TIMEOUT_S": "60",
        },
    ).start()
    try:
        with PathUnit(config, media) as unit:
            job_id = queue_export(client, admin, dataset["id"], stick / "exports")
            job = wait_for(
                lambda: (j := get_export(client, admin, job_id))["status"] in {"completed", "failed"} and j,
                timeout=60,
                what="the USB export",
            )
    finally:
        worker.stop()
    assert job["status"] == "completed", (job, worker.log_text(), [r.stderr for r in unit.runs])
    result = job["result"]
    assert result["via"] == "appliance-usb-write"
    written = Path(result["file"])
    assert written.parent == stick / "exports" and written.name.startswith("parts-yolo-")
    assert written.stat().st_size == result["bytes"]
    # On the stick: the archive and what was there, no temp file; the stick is read-only again.
    assert stick_files(stick) == ["exports", f"exports/{written.name}", "photos.txt"]
    assert_read_only(stick)
    # Nothing left behind: the staged archive, the request, the answer.
    assert list(usb_write.exports_dir(config).iterdir()) == []
    assert list(usb_write.request_dir(config).iterdir()) == []
    assert list(usb_write.result_dir(config).iterdir()) == []
    assert any("ok " in run.stderr for run in unit.runs)
    # A valid zip that our own importer reads back (from the read-only stick).
    with zipfile.ZipFile(written) as archive:
        assert archive.testzip() is None and "data.yaml" in archive.namelist()
    again = create_dataset(client, admin, name="round-trip", classes=["square", "disc"])
    imported = import_folder(client, admin, config, again["id"], written)
    assert imported["status"] == "completed", imported
    assert imported["result"]["imported"] == IMAGES


def test_nobody_answering_fails_the_job_with_a_clear_message(client, admin, config, media, stick, dataset):
    fast = import_config(Path(config.data_path).parent, usb_write_timeout_s=0.5)
    job_id = queue_export(client, admin, dataset["id"], stick)
    started = time.monotonic()
    run_jobs(fast)
    job = get_export(client, admin, job_id)
    assert job["status"] == "failed"
    assert "the USB write service did not answer" in job["error"]
    assert "appliance-usb-write.path" in job["error"]
    assert time.monotonic() - started < 30
    # The request was withdrawn (a service starting late finds nothing), the staged archive removed.
    assert list(usb_write.request_dir(config).iterdir()) == []
    assert list(usb_write.exports_dir(config).iterdir()) == []
    assert stick_files(stick) == ["exports", "photos.txt"]
    assert_read_only(stick)


def test_cancel_while_waiting_withdraws_the_request(client, admin, config, media, stick, dataset):
    job_id = queue_export(client, admin, dataset["id"], stick)
    runner = threading.Thread(target=run_jobs, args=(config,))
    runner.start()
    try:
        wait_for(
            lambda: usb_write.request_dir(config).is_dir() and any(usb_write.request_dir(config).iterdir()),
            timeout=30,
            what="the request",
        )
        cancel = client.post(f"{API}/usb-exports/{job_id}/cancel", headers=admin)
        assert cancel.status_code == 200, cancel.text
    finally:
        runner.join(30)
    job = get_export(client, admin, job_id)
    assert job["status"] == "cancelled", job
    assert list(usb_write.request_dir(config).iterdir()) == []
    assert list(usb_write.exports_dir(config).iterdir()) == []
    assert stick_files(stick) == ["exports", "photos.txt"]


def test_cancelling_a_usb_export_needs_access_and_happens_once(client, admin, config, media):
    from tests.helpers import create_user

    private = create_dataset(client, admin, name="private")
    other = create_user(client, admin, "otto", "labeler")
    folder = media / "share"
    folder.mkdir()
    job_id = queue_export(client, admin, private["id"], folder)
    refused = client.post(f"{API}/usb-exports/{job_id}/cancel", headers=other)
    assert refused.status_code == 404, refused.text  # someone else's private dataset: not even seen
    cancelled = client.post(f"{API}/usb-exports/{job_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    again = client.post(f"{API}/usb-exports/{job_id}/cancel", headers=admin)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    run_jobs(config)
    assert list(folder.iterdir()) == []  # a cancelled pending export never runs


def test_a_writable_folder_is_written_directly(client, admin, config, media, dataset):
    """Development and CI: the import root is a plain folder; no request, no service."""
    folder = media / "share"
    folder.mkdir()
    job_id = queue_export(client, admin, dataset["id"], folder, fmt="voc")
    run_jobs(config)
    job = get_export(client, admin, job_id)
    assert job["status"] == "completed", job
    assert job["result"]["via"] == "direct"
    assert [p.name for p in folder.iterdir()] == [Path(job["result"]["file"]).name]
    assert list(usb_write.exports_dir(config).iterdir()) == []
    assert not usb_write.request_dir(config).exists()
