"""Helpers for the transfer tests: a config with an import root, running queued jobs, reading boxes, sticks.

The `config`, `media` and `stick` fixtures are bound by name in the test modules that use them (`config` overrides
conftest's with one that has an import root under tmp_path).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pwd
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config, load_config
from appliance.db import open_database
from appliance.jobs import service as jobs
from appliance.jobs.worker import load_job_kinds, run_one
from appliance.transfers import usb_write
from tests.helpers import API, REPO

SCRIPT = REPO / "firmware_scripts" / "usb-mount.sh"  # the USB write service's side (run as root there)


def import_config(tmp_path: Path, **overrides: Any) -> Config:
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    return load_config(
        env={},
        data_dir=str(tmp_path / "data"),
        runtime_dir=str(tmp_path / "run"),
        import_roots=[str(media)],
        **overrides,
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return import_config(tmp_path)


@pytest.fixture
def media(config: Config) -> Path:
    """The import root, standing for a mounted USB drive."""
    return Path(config.import_roots[0])


def run_jobs(config: Config) -> list[dict[str, Any]]:
    """Run every queued import/usb_export/thumbnails job in this process, as the worker's io lane would."""
    load_job_kinds()
    db = open_database(config.db_path)
    done = []
    try:
        while (job := jobs.claim_next_job(db, ["import", "usb_export", "thumbnails"])) is not None:
            run_one(job, db, config)
            done.append(jobs.get_job(db, job["id"]))
    finally:
        db.conn.close()
    return done


def import_folder(
    client: Any, headers: dict[str, str], config: Config, dataset_id: int, path: Path, **body: Any
):
    response = client.post(
        f"{API}/datasets/{dataset_id}/imports", json={"path": str(path), **body}, headers=headers
    )
    assert response.status_code == 202, response.text
    run_jobs(config)
    job = client.get(f"{API}/imports/{response.json()['id']}", headers=headers)
    assert job.status_code == 200, job.text
    return job.json()


def upload_archive(client: Any, headers: dict[str, str], dataset_id: int, data: bytes, **params: Any) -> Any:
    return client.post(
        f"{API}/datasets/{dataset_id}/imports/archive",
        content=data,
        params=params,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )


def boxes_by_hash(
    config: Config, dataset_id: int, key: str = "f.sha256"
) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """{sha256 (or the `key` column, e.g. i.original_name): sorted [(class name, x1, y1, x2, y2)]} of a
    dataset, straight from the catalog."""
    import json

    db = open_database(config.db_path)
    try:
        names = [
            c["name"]
            for c in json.loads(
                db.execute("SELECT classes FROM datasets WHERE id = ?", [dataset_id]).fetchone()[0]
            )
        ]
        result: dict[str, list[tuple[str, float, float, float, float]]] = {}
        for image_id, sha in db.execute(
            f"SELECT i.id, {key} FROM images i JOIN image_files f ON f.id = i.file_id WHERE i.dataset_id = ?",
            [dataset_id],
        ).fetchall():
            rows = db.execute(
                "SELECT class_id, x1, y1, x2, y2 FROM annotations WHERE image_id = ?", [image_id]
            ).fetchall()
            result[sha] = sorted((names[c], x1, y1, x2, y2) for c, x1, y1, x2, y2 in rows)
        return result
    finally:
        db.conn.close()


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def mount_options(path: Path) -> list[str]:
    result = subprocess.run(
        ["findmnt", "-rn", "-M", str(path), "-o", "OPTIONS"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().split(",")


@contextlib.contextmanager
def read_only_stick(path: Path, files: dict[str, str]) -> Iterator[Path]:
    """A tmpfs at `path` holding an `exports/` folder and `files`, remounted read-only as usb-mount.sh mounts
    sticks (the USB hardware is what is missing here; the mount is real). Skips where mounting is refused."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,nosuid,nodev,noexec", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        (path / "exports").mkdir()
        for name, text in files.items():
            (path / name).write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        assert mount_options(path)[0] == "ro"
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


# --- USB sticks and the privileged write service (usb-mount.sh serve-requests) -----------------------


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
