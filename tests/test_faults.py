"""Reliability proven by real faults: SIGKILL mid-write hundreds of times, writers in separate processes on
one catalog, and the catalog's pragmas on every connection of every process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.db.connection import EXPECTED, PRAGMA_LOG_ENV
from appliance.jobs.worker import Worker
from tests.helpers import ADMIN, API, REPO, auth, free_port, seeded_catalog, setup_code_from_cli
from tests.training_support import TINY

KILLS = 200

# The writer: the box's real write paths in turn (upload through the catalog service, an annotation PUT, a
# training snapshot, a staged USB-export archive); after each one returned it appends an acknowledgement
# line to a journal file and fsyncs it. Whatever it acknowledged must be there after any SIGKILL.
WRITER = r"""
import json, os, random, sys
from pathlib import Path
from appliance.caller import CurrentUser
from appliance.catalog import IncomingFile, add_images
from appliance.catalog.boxes import put_annotations
from appliance.catalog.schemas import AnnotationsPut, Box
from appliance.config import load_config
from appliance.db import open_database
from appliance.jobs.service import create_job
from appliance.storage import ImageStore
from appliance.training.snapshot import build_snapshot
from appliance.transfers.exporters import export_archive
from appliance.transfers.usb_write import stage_archive
from tests.helpers import image_bytes

config = load_config(env={}, data_dir=sys.argv[1])
seed = int(sys.argv[2])
rng = random.Random(seed)
db = open_database(config.db_path)
store = ImageStore(config)
user = CurrentUser(id=1, username="admin", role="admin", token_id="faults")
journal = open(sys.argv[3], "a")

def ack(record):
    journal.write(json.dumps(record) + "\n")
    journal.flush()
    os.fsync(journal.fileno())

print("ready", flush=True)
k = seed * 1000
while True:
    k += 1
    op = k % 5
    if op in (0, 1):
        files = [IncomingFile(f"img-{k}-{n}.jpg", image_bytes(64, 48, seed=k * 10 + n)) for n in range(2)]
        added = add_images(db, store, config, 1, user, files).added
        ack({"op": "upload", "images": [(i.id, i.sha256) for i in added]})
    elif op == 2:
        ids = [r[0] for r in db.execute("SELECT id FROM images WHERE dataset_id = 1")]
        if not ids:
            continue
        image_id = rng.choice(ids)
        version = db.execute("SELECT version FROM images WHERE id = ?", [image_id]).fetchone()[0]
        boxes = [Box(class_id=n % 2, x1=n, y1=n, x2=n + 5, y2=n + 6) for n in range(1 + k % 3)]
        read = put_annotations(db, image_id, AnnotationsPut(version=version, boxes=boxes), user)
        ack({"op": "annotate", "image": image_id, "version": read.version, "boxes": len(boxes)})
    elif op == 3:
        labeled = "SELECT COUNT(*) FROM images WHERE dataset_id = 1 AND status = 'labeled' AND box_count > 0"
        if db.execute(labeled).fetchone()[0] < 2:
            continue
        job_id = create_job(db, "train", {}, user_id=1, dataset_id=1)
        run_dir = config.data_path / "runs" / str(job_id)
        summary = build_snapshot(db, config.data_path, run_dir, job_id, 1, val_ratio=0.2, seed=0)
        ack({"op": "snapshot", "job": job_id, "images": summary.images})
    else:
        staged, size = stage_archive(config, k, "d.zip", export_archive(config, 1, "yolo", True), lambda *a: None)
        ack({"op": "export", "path": str(staged), "size": size})
"""


def make_box(data: Path) -> None:
    seeded_catalog(load_config(env={}, data_dir=str(data)).db_path).conn.close()


@pytest.mark.slow
def test_acknowledged_writes_survive_hundreds_of_sigkills(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_box(data)
    journal = tmp_path / "journal.jsonl"
    seed = int(os.environ.get("FAULTS_SEED") or time.time())
    print(f"FAULTS_SEED={seed}")  # rerun a failure with the same kill timings
    rng = random.Random(seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    kills = 0
    round_ = 0
    while kills < KILLS:
        round_ += 1
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data), str(round_), str(journal)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready", child.stderr.read() if child.stderr else b""
        time.sleep(rng.uniform(0.005, 0.25))
        if child.poll() is not None:
            raise AssertionError(f"the writer died by itself: {child.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert len(records) >= KILLS // 2, "too few writes reached the journal to prove anything"
    done = Counter(record["op"] for record in records)
    assert all(done[op] >= 3 for op in ("upload", "annotate", "snapshot", "export")), done

    config = load_config(env={}, data_dir=str(data))
    db = open_database(config.db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    store_root = config.data_path / "images"
    for record in records:
        if record["op"] == "upload":
            for image_id, sha in record["images"]:
                row = db.execute(
                    "SELECT f.size, f.format FROM images i JOIN image_files f ON f.id = i.file_id WHERE i.id = ?",
                    [image_id],
                ).fetchone()
                assert row is not None, f"acknowledged image {image_id} is missing"
                assert (store_root / sha[:2] / f"{sha}.jpg").stat().st_size == row[0]
        elif record["op"] == "annotate":
            version = db.execute("SELECT version FROM images WHERE id = ?", [record["image"]]).fetchone()[0]
            assert version >= record["version"], record
        elif record["op"] == "snapshot":
            rows = db.execute(
                "SELECT COUNT(*) FROM training_snapshot_images WHERE job_id = ?", [record["job"]]
            ).fetchone()[0]
            assert (
                rows == record["images"] > 0
                and (config.data_path / "runs" / str(record["job"]) / "data.yaml").is_file()
            )
        elif record["op"] == "export":
            assert Path(record["path"]).stat().st_size == record["size"]
    # No row without its file, and the kept counts agree with the rows.
    for sha, size in db.execute("SELECT sha256, size FROM image_files"):
        assert (store_root / sha[:2] / f"{sha}.jpg").stat().st_size == size
    for image_id, box_count in db.execute("SELECT id, box_count FROM images"):
        assert (
            db.execute("SELECT COUNT(*) FROM annotations WHERE image_id = ?", [image_id]).fetchone()[0]
            == box_count
        )
    kept = db.execute(
        "SELECT COALESCE(SUM(images), 0) FROM dataset_status_stats WHERE dataset_id = 1"
    ).fetchone()[0]
    assert kept == db.execute("SELECT COUNT(*) FROM images WHERE dataset_id = 1").fetchone()[0]
    # What the worker does at start removes the temp files of the writes the kills cut short.
    temp_before = list(data.rglob(".*.tmp"))
    worker = Worker(load_config(env={}, data_dir=str(data), stale_after_s=0))
    worker.sweep_leftovers(db)
    assert list(data.rglob(".*.tmp")) == [], temp_before
    db.conn.close()


# Writers in separate processes, as web, worker, camera and the training child are: each its own
# connection and its own in-process lock, so only SQLite's locking and the busy timeout keep them apart.
CONTENDER = r"""
import sys, time
from appliance.db import open_database, write_transaction
from appliance.jobs.service import add_event, set_progress
db = open_database(sys.argv[1])
name, rounds, job_id = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
errors = 0
for n in range(rounds):
    try:
        if n % 3 == 0:  # a batch, like an import's: 200 rows in one transaction
            with write_transaction(db):
                db.conn.executemany(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, '')",
                    [(f"{name}-{n}-{m}", name) for m in range(200)],
                )
        elif n % 3 == 1:  # progress and an event, like a job's
            set_progress(db, job_id, {name: n})
        else:
            with write_transaction(db):
                db.execute("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, '')", [f"{name}-{n}", name])
    except Exception as exc:
        errors += 1
        print("ERROR", type(exc).__name__, exc, flush=True)
print("done", errors, flush=True)
"""


def test_writers_in_separate_processes_never_fail_or_lose_a_write(tmp_path: Path) -> None:
    path = tmp_path / "appliance.db"
    db = open_database(path)
    migrate(db, path)
    db.execute("INSERT INTO jobs (kind, status, params, created_at) VALUES ('import', 'running', '{}', '')")
    job_id = db.execute("SELECT MAX(id) FROM jobs").fetchone()[0]
    rounds = 150
    names = ["web", "worker", "camera", "child"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(path), name, str(rounds), str(job_id)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            text=True,
        )  # fmt: skip
        for name in names
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for name, output in zip(names, outputs, strict=True):
        assert output.strip().splitlines()[-1] == "done 0", f"{name}: {output[-2000:]}"
        assert "database is locked" not in output
    per_writer = sum(200 if n % 3 == 0 else 1 if n % 3 == 2 else 0 for n in range(rounds))
    for name in names:
        count = db.execute("SELECT COUNT(*) FROM settings WHERE value = ?", [name]).fetchone()[0]
        assert count == per_writer, name
    progress = json.loads(db.execute("SELECT progress FROM jobs WHERE id = ?", [job_id]).fetchone()[0])
    assert set(progress) == set(names)  # every writer's progress merged, none overwritten
    events = db.execute("SELECT COUNT(*) FROM job_events WHERE job_id = ?", [job_id]).fetchone()[0]
    assert events == len(names) * sum(1 for n in range(rounds) if n % 3 == 1)


@pytest.mark.slow
def test_every_process_opens_the_catalog_with_its_pragmas(tmp_path: Path) -> None:
    """web (its pool and loop connection), worker, camera and the training child, as `appliance run` starts them."""
    from tests.helpers import create_dataset, upload
    from tests.models import synthetic_jpeg

    data = tmp_path / "data"
    log_path = tmp_path / "pragmas.jsonl"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update({"APPLIANCE_DATA_DIR": str(data), PRAGMA_LOG_ENV: str(log_path)})
    run = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    import httpx

    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get(f"{API}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        created = http.post(f"{API}/auth/setup", json={**ADMIN, "setup_code": setup_code_from_cli(data)})
        headers = auth(created.json()["access_token"])
        dataset = create_dataset(http, headers, classes=["square", "disc"])
        images = upload(http, headers, dataset["id"], [(f"{n}.jpg", synthetic_jpeg(n)[0]) for n in range(4)])
        for image in images["added"]:
            box = {"class_id": 0, "x1": 1, "y1": 1, "x2": 30, "y2": 30}
            http.put(
                f"{API}/images/{image['id']}/annotations",
                json={"version": 0, "boxes": [box]},
                headers=headers,
            )
        body = {"dataset_id": dataset["id"], "epochs": 1, **TINY}
        job = http.post(f"{API}/training-jobs", json=body, headers=headers).json()
        deadline = time.monotonic() + 300
        while http.get(f"{API}/training-jobs/{job['id']}", headers=headers).json()["status"] not in (
            "completed",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    roles = {" ".join(line["argv"]) for line in lines}
    for role in ("serve", "worker", "camera", "appliance.training.child"):
        assert any(role in r or role.replace(".", "/") in r for r in roles), (role, roles)
    for line in lines:
        wrong = {k: line[k] for k in EXPECTED if line[k] != EXPECTED[k]}
        assert wrong == {}, line
    assert len({line["pid"] for line in lines}) >= 4


IMPORT_IMAGES = 6000


@pytest.mark.slow
def test_an_import_cut_by_a_killed_worker_is_requeued_and_completes(tmp_path: Path) -> None:
    """kill -9 of the worker in the middle of an archive import: the next worker start requeues the job,
    it completes with every image once, and nothing of the cut run stays in staging."""
    import zipfile

    from appliance.jobs.service import create_job
    from appliance.transfers.contracts import ImportParams
    from tests.helpers import image_bytes
    from tests.workers import WorkerProcess, wait_for

    data = tmp_path / "data"
    make_box(data)
    media = tmp_path / "media"
    media.mkdir()
    archive = media / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for n in range(IMPORT_IMAGES):
            zf.writestr(f"photos/{n:05d}.jpg", image_bytes(64, 48, seed=n))
    config = load_config(env={}, data_dir=str(data), import_roots=[str(media)])
    db = open_database(config.db_path)
    params = ImportParams(source="path", path=str(archive), format="plain", unknown_classes="add")
    job_id = create_job(db, "import", params, user_id=1, dataset_id=1)
    env = {"APPLIANCE_IMPORT_ROOTS": str(media)}
    worker = WorkerProcess(data, env=env).start()

    def committed() -> int:
        return int(db.execute("SELECT COUNT(*) FROM images WHERE dataset_id = 1").fetchone()[0])

    wait_for(lambda: committed() >= 200, 120, "the first batches committed", interval=0.005)
    worker.kill()
    cut_at = db.execute("SELECT COUNT(*) FROM images WHERE dataset_id = 1").fetchone()[0]
    assert 0 < cut_at < IMPORT_IMAGES, cut_at  # really cut in the middle
    again = WorkerProcess(data, env={**env, "APPLIANCE_STALE_AFTER_S": "2"}).start()
    try:
        wait_for(
            lambda: db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0] == "completed",
            180,
            "the requeued import to complete",
            interval=0.2,
        )
    finally:
        again.stop()
    status, attempts, result = db.execute(
        "SELECT status, attempts, result FROM jobs WHERE id = ?", [job_id]
    ).fetchone()
    assert status == "completed" and attempts == 2
    assert committed() == IMPORT_IMAGES
    assert (
        db.execute("SELECT COUNT(DISTINCT file_id) FROM images WHERE dataset_id = 1").fetchone()[0]
        == IMPORT_IMAGES
    )
    report = json.loads(result)
    assert (
        report["imported"] + report["duplicates"] == IMPORT_IMAGES
    )  # the second run found the cut run's images
    assert not list((data / "staging").glob("job-*"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.conn.close()
