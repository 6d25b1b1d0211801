"""The privileged side of USB exports: the real `usb-mount.sh serve-requests` on a read-only tmpfs stick.

What it refuses (and that it then touches nothing), a good copy, a copy stopped by SIGTERM, a request left by a
killed run, the archive names both sides accept, and the systemd units agreeing with the worker's folders.
Needs root (mount); skipped with the reason elsewhere.
"""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.transfers import usb_write
from tests import transfers_support
from tests.helpers import REPO
from tests.transfers_support import SCRIPT, assert_read_only, mount_options, script_env, serve, stick_files
from tests.workers import wait_for

SYSTEMD = REPO / "systemd"
# Fixtures: a config with an import root, that root, a read-only stick in it.
config = transfers_support.config
media = transfers_support.media
stick = transfers_support.stick


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
