"""A real full disk: a small tmpfs as the data folder. Uploads, imports, USB exports and training fill it;
each answers 507 or fails its job with the reason, nothing half-written stays, and the box works again once
space is freed. Needs root (mount); skipped, saying so, otherwise."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from appliance.db import open_database
from tests.helpers import ADMIN, API, ServerProcess, auth, create_dataset, setup_code_from_cli
from tests.training_support import TINY
from tests.workers import WorkerProcess, build_synthetic_dataset

pytestmark = pytest.mark.slow

DISK_MB = 48


def noisy_png(seed: int, side: int = 400) -> bytes:
    """About side*side*3 bytes: noise does not compress."""
    image = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def wait_job(http: httpx.Client, path: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(path).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def leftovers(data: Path) -> list[Path]:
    """Temp files of atomic writes, partial uploads and staging folders: none may stay behind."""
    found = [p for p in data.rglob("*") if p.name.endswith((".tmp", ".part"))]
    staging = data / "staging"
    found += [p for p in staging.glob("job-*")] if staging.is_dir() else []
    return found


def assert_catalog_matches_files(data: Path) -> None:
    db = open_database(data / "appliance.db", readonly=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for sha, fmt, size in db.execute("SELECT sha256, format, size FROM image_files"):
            ext = {"jpeg": "jpg", "png": "png"}.get(fmt, fmt)
            assert (data / "images" / sha[:2] / f"{sha}.{ext}").stat().st_size == size
    finally:
        db.conn.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the data disk needs root (CI runs as root)")
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_full_data_disk_answers_507_fails_jobs_cleanly_and_recovers(
    small_disk: Path, tmp_path: Path
) -> None:
    data = small_disk
    media = tmp_path / "media"
    (media / "stick").mkdir(parents=True)
    for n in range(40):  # ~19 MB of photos: more than what will be left
        (media / "stick" / f"photo-{n:02d}.png").write_bytes(noisy_png(1000 + n))
    env = {
        "APPLIANCE_DISK_MIN_FREE_MB": "2",
        "APPLIANCE_IMPORT_ROOTS": str(media),
        "APPLIANCE_WORKER_POLL_S": "0.2",
    }
    with ServerProcess(data, env=env) as server:
        worker = WorkerProcess(data, env=env).start()
        try:
            http = httpx.Client(base_url=server.url, timeout=60)
            created = http.post(f"{API}/auth/setup", json={**ADMIN, "setup_code": setup_code_from_cli(data)})
            http.headers.update(auth(created.json()["access_token"]))
            shapes = build_synthetic_dataset(http, dict(http.headers), count=8)  # for training below
            photos = create_dataset(http, dict(http.headers), name="photos", classes=["part"])

            # 1. Uploads until the disk is full: 507 with what to do, never a 500, nothing half-written.
            statuses = []
            for n in range(80):
                files = [("files", (f"up-{n}-{m}.png", noisy_png(n * 10 + m), "image/png")) for m in range(3)]
                response = http.post(f"{API}/datasets/{photos['id']}/images", files=files)
                statuses.append(response.status_code)
                if response.status_code == 507:
                    assert "disk" in response.json()["detail"]
                    break
            assert statuses[-1] == 507 and set(statuses) <= {201, 507}, statuses
            assert_catalog_matches_files(data)
            assert leftovers(data) == []

            # 2. An import that does not fit: the job fails with the reason; what it committed is whole.
            job = http.post(
                f"{API}/datasets/{photos['id']}/imports", json={"path": str(media / "stick")}
            ).json()
            job = wait_job(http, f"{API}/imports/{job['id']}")
            assert job["status"] == "failed" and "disk" in (job["error"] or ""), job
            assert_catalog_matches_files(data)

            # 3. A USB export staged on the full data disk fails cleanly too.
            export = http.post(
                f"{API}/datasets/{photos['id']}/exports/usb",
                json={"path": str(media), "format": "yolo", "include_unlabeled": True},
            )
            if export.status_code == 202:
                export_job = wait_job(http, f"{API}/usb-exports/{export.json()['id']}")
                assert export_job["status"] == "failed" and "disk" in (export_job["error"] or ""), export_job
            else:
                assert export.status_code == 507, export.text
            assert not list((data / "exports").glob("*")) if (data / "exports").is_dir() else True

            # 4. Training on the full disk: its checkpoints cannot be written; the job fails with the reason.
            train = http.post(f"{API}/training-jobs", json={"dataset_id": shapes["id"], "epochs": 1, **TINY})
            assert train.status_code == 201, train.text
            trained = wait_job(http, f"{API}/training-jobs/{train.json()['id']}", timeout=600)
            assert trained["status"] == "failed", trained
            reason = (trained["error"] or "") + (trained.get("log_tail") or "")
            assert "space" in reason.lower() or "disk" in reason.lower(), reason[-2000:]
            assert worker.process is not None and worker.process.poll() is None  # the worker lives on

            # 5. Space freed: the box works again.
            assert http.delete(f"{API}/datasets/{photos['id']}").status_code == 204
            again = http.post(
                f"{API}/datasets/{shapes['id']}/images",
                files=[("files", ("after.png", noisy_png(99999, 64), "image/png"))],
            )
            assert again.status_code == 201, again.text
            assert_catalog_matches_files(data)
        finally:
            worker.stop()
    # What the worker sweeps at its next start leaves nothing of the interrupted writes.
    restarted = WorkerProcess(data, env={**env, "APPLIANCE_STALE_AFTER_S": "0"}).start()
    time.sleep(3)
    restarted.stop()
    assert leftovers(data) == []


def test_a_training_stops_before_its_checkpoints_eat_into_the_reserve(
    tmp_path: Path, config: Any, fresh_db: Any
) -> None:
    """The guard in the training child, without filling a disk: a reserve larger than the free space."""
    import shutil
    from types import SimpleNamespace

    from appliance.training.progress import Progress

    free_mb = shutil.disk_usage(tmp_path).free // 1024**2
    progress = Progress(fresh_db, config.db_path, 1, tmp_path / "run", [], disk_min_free_mb=free_mb + 1)
    try:
        trainer = SimpleNamespace(stop=False)
        progress.check_disk(trainer)
        assert trainer.stop is True
        assert progress.low_disk is not None and "nearly full" in progress.low_disk
        roomy = Progress(fresh_db, config.db_path, 1, tmp_path / "run2", [], disk_min_free_mb=1)
        other = SimpleNamespace(stop=False)
        roomy.check_disk(other)
        assert other.stop is False and roomy.low_disk is None
        roomy.writer.close()
    finally:
        progress.writer.close()
