"""The firmware scripts: shellcheck clean, --help and --dry-run everywhere, backup/restore under load."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.db import open_database, write_transaction
from appliance.server import create_app
from tests.helpers import LOCAL_URL, REPO, create_dataset, image_bytes, setup_admin, upload

SCRIPTS_DIR = REPO / "firmware_scripts"
SCRIPTS = sorted(p.name for p in SCRIPTS_DIR.glob("*.sh") if p.name != "lib.sh")
EXPECTED = {"install.sh", "uninstall.sh", "fetch-weights.sh", "performance-mode.sh", "backup.sh", "restore.sh",
            "usb-mount.sh"}  # fmt: skip


def script(
    name: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SCRIPTS_DIR / name), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, f"{name} {args}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_every_script_is_there() -> None:
    assert set(SCRIPTS) >= EXPECTED


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="apt-get install -y shellcheck")
@pytest.mark.parametrize("name", [*SCRIPTS, "lib.sh"])
def test_shellcheck_is_clean(name: str) -> None:
    result = subprocess.run(
        ["shellcheck", "-x", "--severity=style", str(SCRIPTS_DIR / name)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_strict_mode_help_and_dry_run(name: str) -> None:
    text = (SCRIPTS_DIR / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(SCRIPTS_DIR / name, os.X_OK)
    result = script(name, "--help")
    assert "Usage:" in result.stdout
    assert "--dry-run" in result.stdout


# --- install / uninstall ------------------------------------------------------------------------


def test_install_dry_run_prints_every_action_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    before_host = [Path(p).exists() for p in ("/etc/systemd/system/appliance-web.service", "/opt/appliance")]
    result = script(
        "install.sh",
        "--dry-run",
        "--root",
        str(root),
        "--platform",
        "jetson",
        "--wheelhouse",
        str(wheelhouse),
    )
    assert tree(root) == []  # nothing created under the fake root
    assert [
        Path(p).exists() for p in ("/etc/systemd/system/appliance-web.service", "/opt/appliance")
    ] == before_host
    actions = [
        line.removeprefix("would: ") for line in result.stdout.splitlines() if line.startswith("would: ")
    ]
    text = "\n".join(actions)
    expected = [
        r"^useradd --system --user-group .* appliance$",
        rf"^install -d -m 0750 .*{root}/var/lib/appliance {root}/var/lib/appliance/weights$",
        rf"^install -d -m 0750 .*{root}/etc/appliance ",
        rf"^python3 -m venv --system-site-packages {root}/opt/appliance/venv$",
        # x86_64 with Python 3.11 (this machine): the hash lock first, then the appliance without resolving again.
        rf"^{root}/opt/appliance/venv/bin/pip install .*--no-index --find-links {wheelhouse} --require-hashes -r .*/requirements/run.lock$",
        rf"^{root}/opt/appliance/venv/bin/pip install .*--no-index --find-links {wheelhouse} --no-deps --editable '{root}/opt/appliance/src\[train\]'$",
        rf"^install -m 0644 .*/systemd/appliance-web.service {root}/etc/systemd/system/appliance-web.service$",
        rf"^install -m 0644 .*/systemd/appliance-worker.service {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/appliance-camera.service {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/appliance.target {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/appliance-usb-mount@.service {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/appliance-usb-write.service {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/appliance-usb-write.path {root}/etc/systemd/system/",
        rf"^install -m 0644 .*/systemd/99-appliance-usb.rules {root}/etc/udev/rules.d/99-appliance-usb.rules$",
        # GigE Vision / USB3 Vision: PyGObject pinned by hash, the USB3 Vision rule, stream socket buffers.
        rf"^{root}/opt/appliance/venv/bin/pip install .*--no-deps --require-hashes -r .*/requirements/genicam.lock$",
        rf"^install -m 0644 .*/systemd/99-appliance-usb3vision.rules {root}/etc/udev/rules.d/99-appliance-usb3vision.rules$",
        rf"^write {root}/etc/sysctl.d/60-appliance-gige.conf \(mode 0644\):$",
        rf"^install -m 0640 .*/systemd/appliance.toml {root}/etc/appliance/appliance.toml$",
        rf"^openssl req -x509 .* -keyout {root}/etc/appliance/tls/key.pem -out {root}/etc/appliance/tls/cert.pem$",
        r"^sed -i -e 's\|\^tls_cert = \"\"\|tls_cert = \"/etc/appliance/tls/cert.pem\"\|'",
        r"^systemctl daemon-reload$",
        r"^udevadm control --reload-rules$",
        r"^systemctl enable appliance.target appliance-web.service appliance-worker.service appliance-camera.service appliance-outputs.service appliance-fleet.service$",
        r"^systemctl enable appliance-usb-write.path$",
        r"^systemctl restart appliance.target$",
    ]
    for pattern in expected:
        assert re.search(pattern, text, flags=re.MULTILINE), f"{pattern}\nnot in:\n{text}"
    assert "https://" in result.stderr  # the URL


def test_install_without_jetpack_makes_a_plain_venv(tmp_path: Path) -> None:
    result = script("install.sh", "--dry-run", "--root", str(tmp_path), "--platform", "cpu", "--no-start")
    assert re.search(rf"^would: python3 -m venv {tmp_path}/opt/appliance/venv$", result.stdout, re.MULTILINE)
    assert "--no-index" not in result.stdout  # no wheelhouse: pip uses its index
    assert "systemctl restart" not in result.stdout
    assert tree(tmp_path) == []


def test_uninstall_dry_run_keeps_data_unless_purged(tmp_path: Path) -> None:
    kept = script("uninstall.sh", "--dry-run", "--root", str(tmp_path))
    assert "systemctl disable --now appliance.target" in kept.stdout
    assert f"rm -rf {tmp_path}/opt/appliance" in kept.stdout
    assert "var/lib/appliance" not in kept.stdout
    purged = script("uninstall.sh", "--dry-run", "--purge", "--root", str(tmp_path))
    assert f"rm -rf {tmp_path}/var/lib/appliance {tmp_path}/etc/appliance" in purged.stdout
    assert tree(tmp_path) == []


# --- performance mode ---------------------------------------------------------------------------


@pytest.fixture
def fake_jetson(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """nvpmodel and jetson_clocks stand-ins that log their arguments (no Jetson here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool, output in (
        ("nvpmodel", "NV Power Mode: MAXN\\n0"),
        ("jetson_clocks", "GPU MaxFreq=1300500000"),
    ):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nprintf "{output}\\n"\n')
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ROOT": str(tmp_path / "root")}
    return env, calls


def test_performance_mode_sets_and_reports(fake_jetson: tuple[dict[str, str], Path]) -> None:
    env, calls = fake_jetson
    dry = script("performance-mode.sh", "--dry-run", "training", env=env)
    assert "would: nvpmodel -m 0" in dry.stdout and re.search(r"would: jetson_clocks$", dry.stdout, re.M)
    assert not calls.exists()
    result = script("performance-mode.sh", "training", env=env)
    logged = calls.read_text().splitlines()
    assert logged[:3] == [
        "nvpmodel -m 0",
        f"jetson_clocks --store {env['ROOT']}/var/lib/appliance/jetson_clocks.conf",
        "jetson_clocks ",
    ]
    assert "power mode: NV Power Mode: MAXN" in result.stderr  # what it set, reported
    assert "GPU MaxFreq" in result.stderr


def test_performance_mode_on_a_machine_that_is_not_a_jetson(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ROOT": str(tmp_path)}
    result = script("performance-mode.sh", "inference", env=env)
    assert "not a Jetson" in result.stderr


# --- weights ------------------------------------------------------------------------------------


def test_checksums_file_is_well_formed() -> None:
    lines = [
        line
        for line in (SCRIPTS_DIR / "weights.sha256").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[0-9a-f]{64}  [a-z0-9.-]+\.pt", line), line


def test_fetch_weights_from_usb_verifies_checksums(tmp_path: Path) -> None:
    usb, dest = tmp_path / "usb", tmp_path / "weights"
    usb.mkdir()
    good, bad = b"good weights", b"tampered weights"
    (usb / "good.pt").write_bytes(good)
    (usb / "bad.pt").write_bytes(bad)
    sums = tmp_path / "sums"
    sums.write_text(
        f"{hashlib.sha256(good).hexdigest()}  good.pt\n{hashlib.sha256(b'the real file').hexdigest()}  bad.pt\n"
    )
    common = ["--from", str(usb), "--dest", str(dest), "--checksums", str(sums)]
    dry = script("fetch-weights.sh", "--dry-run", *common)
    assert f"would: cp {usb}/good.pt {dest}/.good.pt.part" in dry.stdout
    assert not dest.exists()
    result = script("fetch-weights.sh", *common, check=False)
    assert result.returncode == 1  # one file refused
    assert (dest / "good.pt").read_bytes() == good
    assert sorted(p.name for p in dest.iterdir()) == ["good.pt"]  # nothing of bad.pt left behind
    assert "REFUSED: bad.pt" in result.stderr
    unlisted = script("fetch-weights.sh", *common, "other.pt", check=False)
    assert unlisted.returncode == 1 and "other.pt has no checksum" in unlisted.stderr
    again = script("fetch-weights.sh", *common, "good.pt")
    assert "already in" in again.stderr


def test_fetch_weights_downloads_the_listed_release_assets_in_dry_run(tmp_path: Path) -> None:
    result = script("fetch-weights.sh", "--dry-run", "--dest", str(tmp_path / "w"))
    assert (
        f"would: curl --fail --location --silent --show-error -o {tmp_path}/w/.yolo11n.pt.part "
        "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n.pt"
    ) in result.stdout
    assert "yolo11s.pt" in result.stdout


# --- USB mount ----------------------------------------------------------------------------------


def test_usb_mount_is_read_only_in_dry_run(tmp_path: Path) -> None:
    media = tmp_path / "media"
    result = script("usb-mount.sh", "--dry-run", "mount", "/dev/sdz1", env={"MEDIA": str(media)})
    assert f"would: mount -o ro,nosuid,nodev,noexec /dev/sdz1 {media}/sdz1" in result.stdout
    assert not media.exists()
    gone = script("usb-mount.sh", "--dry-run", "unmount", "/dev/sdz1", env={"MEDIA": str(media)})
    assert "not mounted" in gone.stderr


# --- backup / restore ---------------------------------------------------------------------------


def test_backup_and_restore_round_trip_while_writes_continue(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    with TestClient(base_url=LOCAL_URL, app=create_app(config)) as client:
        admin = setup_admin(client)
        dataset = create_dataset(client, admin)
        uploaded = upload(client, admin, dataset["id"], [("a.jpg", image_bytes(seed=3))])
    image_id = uploaded["added"][0]["id"]

    acknowledged: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        db = open_database(config.db_path)
        try:
            n = 0
            while not stop.is_set():
                n += 1
                with write_transaction(db):
                    cursor = db.execute(
                        "INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket,"
                        " created_at) VALUES (?, ?, 0, 0.1, 0.1, 0.2, 0.3, 0, ?)",
                        [image_id, dataset["id"], datetime.now(UTC).isoformat()],
                    )
                    row_id = cursor.lastrowid
                acknowledged.append(int(row_id))  # COMMIT returned: acknowledged
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            db.conn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while len(acknowledged) < 50:
        time.sleep(0.01)
    acknowledged_before = list(acknowledged)
    archive = tmp_path / "backup.tar"
    script("backup.sh", "--data-dir", str(config.data_path), str(archive))
    during = len(acknowledged) - len(acknowledged_before)
    time.sleep(0.1)
    stop.set()
    thread.join(10)
    assert not errors, errors
    assert during > 0, "the writer made no commit while the backup ran"

    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "./appliance.db" in names and "./BACKUP-INFO" in names
    assert not any(name.endswith(("appliance.db-wal", "appliance.db-shm")) for name in names)
    assert any(name.startswith("./images/") and name.endswith(".jpg") for name in names)

    target = tmp_path / "restored"
    target.mkdir()
    (target / "old-file").write_text("before the restore")
    result = script("restore.sh", "--data-dir", str(target), str(archive))
    assert "integrity_check ok" in result.stdout
    moved_aside = list(tmp_path.glob("restored.before-restore-*"))
    assert len(moved_aside) == 1 and (moved_aside[0] / "old-file").exists()
    conn = sqlite3.connect(target / "appliance.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        restored = {row[0] for row in conn.execute("SELECT id FROM annotations")}
    finally:
        conn.close()
    assert set(acknowledged_before) <= restored  # every commit acknowledged before the backup started
    assert restored <= set(acknowledged)  # and nothing that was never committed
    assert list(target.glob("images/*/*.jpg"))
    # The restored catalog opens in the app.
    with TestClient(base_url=LOCAL_URL, app=create_app(load_config(env={}, data_dir=str(target)))) as client:
        assert client.get("/api/v1/health").status_code == 200


def test_restore_refuses_a_damaged_archive_and_leaves_the_data_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep").write_text("current data")
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        blob = b"SQLite format 3\0" + os.urandom(4096)
        info = tarfile.TarInfo("./appliance.db")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    result = script("restore.sh", "--data-dir", str(data), str(archive), check=False)
    assert result.returncode != 0
    assert (data / "keep").read_text() == "current data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "data"]


def test_backup_and_restore_dry_runs_change_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_database(data / "appliance.db").conn.close()
    before = tree(tmp_path)
    backup = script("backup.sh", "--dry-run", "--data-dir", str(data), str(tmp_path / "b.tar"))
    assert "SQLite online backup" in backup.stdout and "--exclude=./appliance.db" in backup.stdout
    (tmp_path / "b.tar").write_bytes(b"")
    restore = script("restore.sh", "--dry-run", "--data-dir", str(data), str(tmp_path / "b.tar"))
    assert "would: systemctl stop appliance-web.service" in restore.stdout
    assert "integrity_check" in restore.stdout
    assert tree(tmp_path) == sorted([*before, "b.tar"])
