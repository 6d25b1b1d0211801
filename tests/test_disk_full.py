"""A real full disk: a small tmpfs as the data folder. Uploads, imports, USB exports and training fill it;
each answers 507 or fails its job with the reason, nothing half-written stays, and the box works again once
space is freed. Needs root (mount); skipped, saying so, otherwise."""

from __future__ import annotations

import errno
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


# --- the line on a full disk: the camera process, its events and snapshots, and the outbox -----------------

RESERVE_MB = 8
HOOK_KEY = "disk-full-webhook-key-0123"
# The verdict changes every 8 frames at 15 fps; an inspection every 0.25 s in interval mode.
LINE_SCENES = [(8, [(1, 1), (1, 3)], []), (8, [(1, 1)], [])]


def fill_disk(path: Path, leave_bytes: int = 0) -> None:
    """A file of something else that takes the data disk's space until `leave_bytes` are free (0: every byte)."""
    with open(path, "ab", buffering=0) as handle:
        chunk = b"\0" * (1024 * 1024)
        while True:
            room = shutil_free(path.parent) - leave_bytes
            if room <= 0:
                return
            try:
                handle.write(chunk[: min(len(chunk), room)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if leave_bytes:
                    return
                break
        for size in (4096, 1):  # the last pages and bytes
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def shutil_free(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


class FullDiskLine:
    """The box on the small disk (`appliance camera` and `appliance outputs`), a webhook receiver on the line."""

    def __init__(self, data: Path, tmp: Path, colour_onnx: Path) -> None:
        from appliance.caller import CurrentUser
        from appliance.config import load_config
        from appliance.db import migrate
        from appliance.outputs import service
        from appliance.outputs.schemas import OutputWrite, WebhookSettings
        from appliance.stations import cameras
        from appliance.stations.schemas import CameraSettings, CameraWrite, Rule
        from tests.camera_sources import deploy_model, write_scenes
        from tests.line_peers import BoxProcess, WebhookReceiver

        admin = CurrentUser(id=1, username="admin", role="admin", token_id="test")
        self.config = load_config(env={}, data_dir=str(data), runtime_dir=str(tmp / "run"), box_id="box-disk")
        self.db = open_database(self.config.db_path)
        migrate(self.db, self.config.db_path)
        deploy_model(self.config, self.db, colour_onnx, None, "colour")
        video = write_scenes(tmp / "line.avi", LINE_SCENES, fps=15)  # beside the data disk, not on it
        rule = Rule(name="two squares", classes=["square"], condition="==", count=2, min_confidence=0.5)
        settings = CameraSettings(
            source=str(video), confidence=0.5, rules=[rule], mode="interval", interval_s=0.25, snapshots=True
        )
        self.camera_id = cameras.create_camera(
            self.db, CameraWrite(name="press", enabled=True, settings=settings), admin
        ).id
        self.receiver = WebhookReceiver(HOOK_KEY).start()
        hook = WebhookSettings(url=self.receiver.url, secret=HOOK_KEY, timeout_s=5)
        self.output_id = service.create_output(
            self.db, self.config, OutputWrite(name="mes", settings=hook), admin
        ).id
        env = {"APPLIANCE_DISK_MIN_FREE_MB": str(RESERVE_MB)}
        self.camera = BoxProcess("camera", self.config, env=env)
        self.outputs = BoxProcess("outputs", self.config, env=env)

    def status(self) -> Any:
        from appliance.camera.publish import camera_dir, read_status

        return read_status(camera_dir(self.config.runtime_path, self.camera_id))

    def event_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM inspection_events ORDER BY id").fetchall()]

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies the receiver took (answered 200), in arrival order."""
        import json

        with self.receiver.lock:
            return [json.loads(r["body"]) for r in self.receiver.received if r["status"] == 200]

    def posts(self) -> int:
        with self.receiver.lock:
            return len(self.receiver.received)

    def answer(self, status: int | None) -> None:
        """The receiver answers `status` to every request from now on (None: 200 again)."""
        with self.receiver.lock:
            self.receiver.statuses[:] = [status] * 100_000 if status else []

    def backlog(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM output_outbox").fetchone()[0])

    def alive(self) -> bool:
        return all(p.process is not None and p.process.poll() is None for p in (self.camera, self.outputs))

    def close(self) -> None:
        for process in (self.camera, self.outputs):
            process.stop()
        print(f"camera:\n{self.camera.log_text()[-4000:]}\noutputs:\n{self.outputs.log_text()[-4000:]}")
        self.receiver.stop()
        self.db.conn.close()


def test_the_line_runs_on_a_full_disk_and_catches_up_when_space_returns(
    small_disk: Path, tmp_path: Path
) -> None:
    from appliance.system.processes import processes_read
    from tests.camera_sources import build_colour_onnx
    from tests.workers import wait_for

    line = FullDiskLine(small_disk, tmp_path, build_colour_onnx(tmp_path / "colour" / "model_64.onnx"))
    ballast = [small_disk / "ballast-reserve.bin", small_disk / "ballast-full.bin"]
    try:
        line.camera.start()
        line.outputs.start()
        # 1. Room on the disk: events with their snapshots reach the webhook.
        wait_for(
            lambda: sum(1 for b in line.delivered() if b["snapshot_url"]) >= 3, timeout=60, what="events"
        )

        # 2. Below the reserve: inspections go on, events are written and delivered without snapshots, saying why.
        fill_disk(ballast[0], leave_bytes=RESERVE_MB * 1024 * 1024 // 2)
        reserve_start = line.event_ids()[-1]
        wait_for(
            lambda: sum(1 for b in line.delivered() if b["event_id"] > reserve_start + 1) >= 3,
            timeout=30,
            what="events below the reserve",
        )
        below = [b for b in line.delivered() if b["event_id"] > reserve_start + 1]
        assert all(b["snapshot_url"] is None and b["snapshot_missing"] == "disk_reserve" for b in below), (
            below
        )
        assert "reserve" in line.status().storage_note

        # 3. The line's receiver goes away for a while: a backlog builds in the outbox.
        line.answer(503)
        wait_for(lambda: line.backlog() >= 6, timeout=30, what="a backlog")

        # 4. Something else fills the disk to its last byte: SQLite answers SQLITE_FULL.
        fill_disk(ballast[1])
        assert shutil_free(small_disk) == 0
        full_at = time.time()
        held = wait_for(
            lambda: (s := line.status()) is not None and s.events_held >= 3 and s,
            timeout=30,
            what="events held in memory",
        )
        assert "disk is full" in held.storage_note and str(held.events_held) in held.storage_note
        committed = line.event_ids()  # nothing more commits while the disk is full
        frames = held.frames
        wait_for(lambda: line.status().frames >= frames + 10, timeout=10, what="inspections going on")
        assert line.status().verdict in ("ok", "ng") and line.status().state == "running"
        warnings = processes_read(line.config.runtime_path, in_web=False).warnings
        assert any(
            w.startswith("camera: inspection events cannot be written (the data disk is full)")
            for w in warnings
        ), warnings

        # The receiver is back: the outputs deliver the backlog although they cannot mark it delivered.
        line.answer(None)
        wait_for(
            lambda: {b["event_id"] for b in line.delivered()} >= set(committed),
            timeout=40,
            what="the backlog",
        )
        assert line.event_ids() == committed and line.backlog() > 0  # delivered, but not yet marked
        notes = wait_for(
            lambda: [
                w
                for w in processes_read(line.config.runtime_path, in_web=False).warnings
                if "cannot mark" in w
            ],
            timeout=10,
            what="the outputs' warning",
        )
        assert "disk is full" in notes[0]
        posts = line.posts()
        time.sleep(4)  # no hot loop, no redelivery of what the receiver has while the marks fail
        assert line.posts() == posts and line.alive()

        # 5. Space returns: the held events are written, snapshots resume, the outputs catch up, by themselves.
        for path in ballast:
            path.unlink()
        freed_at = time.time()
        wait_for(
            lambda: (s := line.status()) and s.events_held == 0 and not s.storage_note,
            timeout=30,
            what="the held events written",
        )
        wait_for(
            lambda: (
                line.db.execute(
                    "SELECT COUNT(*) FROM inspection_events WHERE ts > ? AND snapshot IS NOT NULL", [freed_at]
                ).fetchone()[0]
                >= 2
            ),
            timeout=20,
            what="snapshots again",
        )
        last = line.event_ids()[-1]
        wait_for(
            lambda: line.backlog() == 0 and any(b["event_id"] >= last for b in line.delivered()), timeout=30
        )
        assert not any("cannot" in w for w in processes_read(line.config.runtime_path, in_web=False).warnings)
        assert line.alive()
    finally:
        line.close()

    # Nothing the catalog committed is lost: ids without gaps, each delivered once and in order.
    events = line_events(small_disk)
    ids = [e["id"] for e in events]
    assert ids == list(range(ids[0], ids[-1] + 1))
    got = [
        b["event_id"] for b in line.delivered()
    ]  # (the last few, written as the box stopped, may be missing)
    assert got[-1] >= last and got == [i for i in ids if i <= got[-1]], (
        f"missing {sorted(set(ids) - set(got))[:10]}, twice {[i for i in set(got) if got.count(i) > 1][:10]}"
    )
    held_written = [e for e in events if full_at < e["ts"] < freed_at]
    assert len(held_written) >= 3  # inspected while the disk was full, written once space returned
    assert any(e["snapshot"] for e in held_written)  # those still holding their JPEG got it written then
    for event in events:
        if event["snapshot"]:
            assert (small_disk / "events" / event["snapshot"]).stat().st_size == event["snapshot_bytes"]
        else:
            assert event["snapshot_missing"] == "disk_reserve", event
    by_id = {b["event_id"]: b for b in line.delivered()}
    assert all(
        by_id[e["id"]]["snapshot_missing"] == e["snapshot_missing"] for e in events if e["id"] in by_id
    )
    camera_log = line.camera.log_text()
    assert (
        "events were never written" not in camera_log and "Traceback" in camera_log
    )  # logged once, then quiet
    assert camera_log.count("Traceback") <= 3, camera_log[-3000:]


def line_events(data: Path) -> list[dict[str, Any]]:
    db = open_database(data / "appliance.db", readonly=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return list(
            db.query(
                "SELECT id, ts, snapshot, snapshot_bytes, snapshot_missing FROM inspection_events ORDER BY id"
            )
        )
    finally:
        db.conn.close()


def test_runtime_files_on_a_full_disk_are_skipped_never_raised_into_the_camera_loop(small_disk: Path) -> None:
    """In development the runtime folder is `<data_dir>/run`, on the data disk: the camera's hand-over to the
    web process is best effort there, so a full disk never stops a loop before it hands off its events."""
    from appliance.camera.contracts import FrameMeta
    from appliance.camera.publish import Publisher, read_frame, read_status
    from appliance.stations.schemas import CameraStatus

    publisher = Publisher(small_disk / "run", 1)
    jpeg = noisy_png(7, 64)  # any bytes: the publisher does not decode them
    fill_disk(small_disk / "ballast.bin")
    publisher.publish_frame(jpeg, FrameMeta(seq=1, camera_id=1))
    publisher.publish_status(CameraStatus(camera_id=1, state="running"))
    assert read_status(publisher.folder) is None and leftovers(small_disk) == []
    (small_disk / "ballast.bin").unlink()
    publisher.publish_frame(jpeg, FrameMeta(seq=2, camera_id=1))
    publisher.publish_status(CameraStatus(camera_id=1, state="running", frames=2))
    status = read_status(publisher.folder)
    assert status is not None and status.frames == 2
    frame = read_frame(publisher.folder)
    assert frame is not None and frame.seq == 2 and frame.jpeg == jpeg


def test_the_event_writer_keeps_events_and_trigger_expiries_the_full_catalog_refuses(
    small_disk: Path,
) -> None:
    """The writer's own thread on a disk full to its last byte: the batch and the expiry taken with it are both
    kept and retried (the expiry, tried first, once made the batch beside it vanish), and nothing is lost when
    space returns."""
    from appliance.camera.writer import EventWriter
    from appliance.config import load_config
    from appliance.db import migrate
    from appliance.stations import triggers
    from appliance.stations.contracts import InspectionEvent
    from tests.workers import wait_for

    config = load_config(env={}, data_dir=str(small_disk), disk_min_free_mb=1)
    db = open_database(config.db_path)
    try:
        migrate(db, config.db_path)
        db.execute(
            "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('gate', 1, '{}', '', '')"
        )
        trigger_id = triggers.insert_trigger(db, 1, "http")
        writer = EventWriter(config)
        fill_disk(small_disk / "ballast.bin")
        # Queued before the thread starts: its first take holds both.
        writer.expire(trigger_id, "no frame arrived in time")
        for n in range(3):
            event = InspectionEvent(camera_id=1, ts=time.time(), mode="interval", verdict="ok")
            assert writer.submit(event, noisy_png(n, 32))
        writer.start()
        wait_for(lambda: writer.stats.failing_since is not None, timeout=10, what="a refused write")
        time.sleep(0.5)  # a few retries
        assert writer.held == 3 and "the data disk is full" in writer.storage_note()
        assert db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0] == 0
        (small_disk / "ballast.bin").unlink()
        assert writer.wait_idle(15)
        writer.close()
        stored = db.execute("SELECT snapshot, snapshot_missing FROM inspection_events").fetchall()
        assert stored == [(None, "disk_reserve")] * 3  # taken while the disk was full: kept without snapshot
        assert triggers.get_trigger(db, 1, trigger_id).status == "expired"
        assert writer.held == 0 and writer.storage_note() == "" and writer.stats.events_dropped == 0
    finally:
        db.conn.close()
