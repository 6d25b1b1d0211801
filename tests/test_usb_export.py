"""USB export onto a drive mounted read-only: the worker's request, the real `usb-mount.sh serve-requests`.

A tmpfs mounted read-only under a temporary media root stands for the stick (mounted as usb-mount.sh mounts
drives); a thread runs the real script whenever the request folder is not empty, as
appliance-usb-write.path does on the device. Needs root (mount); skipped with the reason elsewhere.
"""

from __future__ import annotations

import configparser
import errno
import os
import pwd
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config, load_config
from appliance.imports import usb_write
from tests.helpers import API, REPO, create_dataset
from tests.imports_support import import_config, import_folder, mount_options, read_only_stick, run_jobs
from tests.models import write_yolo_dataset
from tests.workers import WorkerProcess, wait_for

SCRIPT = REPO / "firmware_scripts" / "usb-mount.sh"
SYSTEMD = REPO / "systemd"
IMAGES = 6


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return import_config(tmp_path, usb_write_timeout_s=60.0)


@pytest.fixture
def media(config: Config) -> Path:
    return Path(config.import_roots[0])


@pytest.fixture
def stick(media: Path) -> Iterator[Path]:
    """A read-only tmpfs at <media>/STICK with an `exports/` folder, mounted as usb-mount.sh mounts drives."""
    with read_only_stick(media / "STICK", {"photos.txt": "already on the stick\n"}) as path:
        yield path


def stick_files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_read_only(path: Path) -> None:
    assert mount_options(path)[0] == "ro"
    with pytest.raises(OSError) as caught:
        (path / "probe").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS


def script_env(config: Config, media: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MEDIA": str(media),
        "DATA_DIR": str(config.data_path),
        "APP_USER": pwd.getpwuid(os.getuid()).pw_name,  # the worker's user: here the test's own
    }


def serve(config: Config, media: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One run of the privileged side, as appliance-usb-write.service starts it."""
    return subprocess.run(
        [
            str(SCRIPT),
            *extra,
            "serve-requests",
            str(usb_write.request_dir(config)),
            str(usb_write.result_dir(config)),
        ],
        env=script_env(config, media),
        capture_output=True,
        text=True,
        timeout=60,
    )


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


# --- the privileged side's refusals -------------------------------------------------------------


def put_request(config: Config, stem: str, **fields: str) -> Path:
    requests = usb_write.request_dir(config)
    requests.mkdir(parents=True, exist_ok=True)
    usb_write.result_dir(config).mkdir(parents=True, exist_ok=True)
    path = requests / f"{stem}.request"
    path.write_text("".join(f"{key}={value}\n" for key, value in fields.items()))
    return path


@pytest.fixture
def staged(config: Config) -> Path:
    folder = usb_write.exports_dir(config)
    folder.mkdir(parents=True)
    path = folder / "7-parts-yolo-20261128-000000.zip"
    path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    return path


def good_request(staged: Path, stick: Path) -> dict[str, str]:
    return {
        "source": str(staged),
        "target": str(stick),
        "folder": "exports",
        "name": "parts.zip",
        "size": str(staged.stat().st_size),
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source": "/etc/hostname"}, "the source is not in"),
        ({"source": "{exports}/../appliance.db"}, "the source's name is not plain"),
        ({"source": "{exports}/7-link.zip"}, "the source is a symbolic link"),
        ({"target": "{media}/plain"}, "is not a mount point"),
        ({"target": "{stick}/exports"}, "the target is not a drive under"),
        ({"target": "/"}, "the target is not a drive under"),
        ({"folder": "exports/../.."}, "the folder has a '..' step"),
        ({"folder": "/etc"}, "the folder must be relative"),
        ({"folder": "escape"}, "the folder leaves the drive"),
        ({"name": "../evil.zip"}, "the file name is not plain"),
        ({"name": "photos.txt", "folder": ""}, "already exists"),
        ({"size": "999"}, "is not 999 bytes long"),
    ],
)
def test_the_write_service_refuses_and_touches_nothing(
    config, media, stick, staged, tmp_path, change, reason
):
    secret = tmp_path / "secret.zip"
    secret.write_bytes(b"not for the stick")
    (staged.parent / "7-link.zip").symlink_to(secret)
    (media / "plain").mkdir()
    if change.get("folder") == "escape":
        # A link on the drive leading off it: made while the stick is briefly writable.
        subprocess.run(["mount", "-o", "remount,rw", str(stick)], check=True)
        (stick / "escape").symlink_to(tmp_path)
        subprocess.run(["mount", "-o", "remount,ro", str(stick)], check=True)
    before = stick_files(stick)
    fields = good_request(staged, stick)
    for key, value in change.items():
        fields[key] = value.format(exports=staged.parent, media=media, stick=stick)
    request = put_request(config, "job7-refused", **fields)
    result = serve(config, media)
    assert result.returncode == 0, result.stderr
    answer = (usb_write.result_dir(config) / "job7-refused.result").read_text()
    assert answer.startswith("error ") and reason in answer, answer
    assert not request.exists()
    assert list(usb_write.request_dir(config).iterdir()) == []
    assert stick_files(stick) == before
    assert_read_only(stick)
    assert "remount" not in result.stderr  # refused before the drive was made writable
    assert staged.exists() and secret.read_bytes() == b"not for the stick"


def test_the_write_service_copies_a_good_request_and_cleans_the_folder(config, media, stick, staged):
    """The same request as the refusals, unchanged, succeeds; junk in the watched folder is removed."""
    put_request(config, "job7-good", **good_request(staged, stick))
    junk = usb_write.request_dir(config) / ".half-written.tmp"
    junk.write_text("x")
    dry = serve(config, media, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would: mount -o remount,rw {stick}" in dry.stdout
    assert f"would: mount -o remount,ro {stick}" in dry.stdout
    assert (usb_write.request_dir(config) / "job7-good.request").exists()  # a dry run changes nothing
    assert stick_files(stick) == ["exports", "photos.txt"]
    result = serve(config, media)
    assert result.returncode == 0, result.stderr
    answer = (usb_write.result_dir(config) / "job7-good.result").read_text().strip()
    assert answer == f"ok {staged.stat().st_size}"
    assert (stick / "exports" / "parts.zip").read_bytes() == staged.read_bytes()
    assert oct((stick / "exports" / "parts.zip").stat().st_mode & 0o777) == "0o644"
    assert stick_files(stick) == ["exports", "exports/parts.zip", "photos.txt"]
    assert list(usb_write.request_dir(config).iterdir()) == []
    assert_read_only(stick)


def test_a_stopped_copy_leaves_the_stick_read_only_and_clean(config, media, stick, staged, tmp_path):
    """SIGTERM mid-copy (systemd stopping the unit): the trap removes the temp file, remounts read-only and
    answers "interrupted". `sync` is slowed down (once) so the signal lands while the copy is in flight."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "slow-once"
    marker.touch()
    real_sync = subprocess.run(["bash", "-c", "type -P sync"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "sync").write_text(
        f'#!/bin/sh\nif [ -e {marker} ]; then rm {marker}; sleep 30; fi\nexec {real_sync} "$@"\n'
    )
    (bin_dir / "sync").chmod(0o755)
    put_request(config, "job9-stop", **good_request(staged, stick))
    env = {**script_env(config, media), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        [
            str(SCRIPT),
            "serve-requests",
            str(usb_write.request_dir(config)),
            str(usb_write.result_dir(config)),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: not marker.exists(), timeout=30, what="the copy to reach sync")
        assert mount_options(stick)[0] == "rw"
        assert any(name.endswith(".part") for name in stick_files(stick))
        os.killpg(process.pid, signal.SIGTERM)  # systemd signals the whole control group
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, stderr
    assert "interrupted" in (usb_write.result_dir(config) / "job9-stop.result").read_text()
    assert stick_files(stick) == ["exports", "photos.txt"]
    assert_read_only(stick)
    assert list(usb_write.request_dir(config).iterdir()) == []


def test_a_request_left_by_a_killed_run_is_answered_not_copied(config, media, stick, staged):
    """A request left by a killed run (.taken) is answered as interrupted, never copied."""
    put_request(config, "job8-x", **good_request(staged, stick)).rename(
        usb_write.request_dir(config) / ".job8-x.taken"
    )
    result = serve(config, media)
    assert result.returncode == 0, result.stderr
    assert "interrupted" in (usb_write.result_dir(config) / "job8-x.result").read_text()
    assert stick_files(stick) == ["exports", "photos.txt"]


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("parts-yolo-20261128-101500.zip", "parts-yolo-20261128-101500.zip"),
        ("--x-yolo.zip", "x-yolo.zip"),
        ("._-.zip", "dataset.zip"),
        ("a b/c\n.zip", "a_b_c_.zip"),
        ("x" * 300 + ".zip", "x" * 150 + ".zip"),
    ],
)
def test_archive_names_are_plain_for_the_write_service(raw: str, plain: str) -> None:
    assert usb_write.plain_name(raw) == plain
    checked = subprocess.run(
        ["bash", "-c", 'eval "$(grep "^is_plain_name()" "$1")"; is_plain_name "$2"', "-", str(SCRIPT), plain],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


# --- the units and the worker agree -------------------------------------------------------------


def test_the_path_unit_watches_the_folder_the_worker_writes() -> None:
    device = load_config(SYSTEMD / "appliance.toml", env={})
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string((SYSTEMD / "appliance-usb-write.path").read_text())
    assert parser["Path"]["DirectoryNotEmpty"] == str(usb_write.request_dir(device))
    assert parser["Path"]["Unit"] == "appliance-usb-write.service"
    service = (SYSTEMD / "appliance-usb-write.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split()[1:] == [
        "serve-requests",
        str(usb_write.request_dir(device)),
        str(usb_write.result_dir(device)),
    ]
    assert f"Environment=MEDIA={device.import_roots[0]}" in service
    assert f"Environment=DATA_DIR={device.data_dir}" in service
    worker = (SYSTEMD / "appliance-worker.service").read_text()
    assert f"ReadWritePaths={device.data_dir} {device.runtime_dir}" in worker  # it can write both folders
