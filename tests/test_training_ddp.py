"""Multi-GPU training (Ultralytics DDP, `device="0,1,..."`) as far as a CPU-only machine can prove it: the job takes
the device list, and the progress callbacks survive Ultralytics' hand-off to its DDP workers (the cloudpickled
state file it writes for torch.distributed.run): a worker rebuilt from that very file trains and reports into
the catalog, and leaves its epochs for the training child. What has not run here: NCCL, two ranks, GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from appliance.db import open_database
from appliance.jobs import service as jobs
from appliance.training.progress import DDP_PROGRESS, Progress
from tests.helpers import API, REPO, create_dataset, image_bytes, seeded_catalog, upload
from tests.workers import wait_for


def test_the_device_list_is_checked_against_this_machine(client, admin):
    dataset = create_dataset(client, admin, "parts", classes=["a"])
    added = upload(client, admin, dataset["id"], [(f"{n}.jpg", image_bytes(seed=n)) for n in range(2)])[
        "added"
    ]
    for image in added:
        boxes = {
            "version": image["version"],
            "boxes": [{"class_id": 0, "x1": 2, "y1": 2, "x2": 20, "y2": 20}],
        }
        assert (
            client.put(f"{API}/images/{image['id']}/annotations", json=boxes, headers=admin).status_code
            == 200
        )
    body = {"dataset_id": dataset["id"], "base_model": "yolov8n.yaml", "epochs": 1, "imgsz": 64, "batch": 4}
    answer = client.post(f"{API}/training-jobs", json={**body, "device": "0,1"}, headers=admin)
    assert answer.status_code == 422 and "no NVIDIA GPU" in answer.json()["detail"], answer.text
    for bad in ("0,1,2,3,4,5,6,7,8", "1,x", "0;1"):
        assert (
            client.post(f"{API}/training-jobs", json={**body, "device": bad}, headers=admin).status_code
            == 400
        )
    one = client.post(f"{API}/training-jobs", json={**body, "device": "cpu"}, headers=admin)
    assert one.status_code == 201 and one.json()["params"]["device"] == "cpu", one.text


def test_only_rank_zero_reports_in_a_ddp_run(tmp_path, monkeypatch):
    import cloudpickle

    db_path = tmp_path / "catalog.db"
    db = seeded_catalog(db_path)
    job_id = jobs.create_job(db, "train", {}, user_id=1, dataset_id=1)
    progress = Progress(db, db_path, job_id, tmp_path / "run", [], 512)
    state = cloudpickle.dumps({"callbacks": {"on_train_batch_end": [progress.on_train_batch_end]}})
    monkeypatch.setenv("RANK", "1")
    other = cloudpickle.loads(state)["callbacks"]["on_train_batch_end"][0].__self__
    monkeypatch.setenv("RANK", "0")
    first = cloudpickle.loads(state)["callbacks"]["on_train_batch_end"][0].__self__
    assert other.silent and other.in_ddp_worker and not first.silent and first.in_ddp_worker
    assert other.db is not db and other.job_id == job_id
    for p in (progress, other, first):
        p.writer.close()
    db.conn.close()


@pytest.mark.slow
def test_a_ddp_worker_rebuilt_from_ultralytics_state_file_trains_and_reports(tmp_path: Path) -> None:
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(tmp_path / "ultralytics-config")
    from ultralytics import YOLO
    from ultralytics.utils.dist import generate_ddp_file

    from tests.models import write_yolo_dataset

    db_path = tmp_path / "catalog.db"
    db = seeded_catalog(db_path)
    job_id = jobs.create_job(db, "train", {}, user_id=1, dataset_id=1)
    run_dir = tmp_path / "run"
    data_yaml = write_yolo_dataset(tmp_path / "dataset", count=12, size=64)
    model = YOLO("yolov8n.yaml")
    progress = Progress(db, db_path, job_id, run_dir, [], 512)
    progress.attach(model)
    args = {
        **model.overrides, "data": str(data_yaml), "epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu", "workers": 0,
        "project": str(run_dir), "name": "train", "exist_ok": True, "plots": False, "amp": False, "mode": "train",
    }  # fmt: skip
    trainer = model._smart_load("trainer")(overrides=args, _callbacks=model.callbacks)
    # The file Ultralytics writes for every DDP worker: the trainer class, its args, the model and our callbacks.
    script = generate_ddp_file(trainer)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
        done = subprocess.run(
            [sys.executable, script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        Path(script).unlink(missing_ok=True)
        Path(script).with_suffix(".pt").unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # The worker wrote the job's progress into the catalog through its own connection.
    fresh = open_database(db_path)
    job = jobs.get_job(fresh, job_id)
    assert job["progress"]["epoch"] == 1 and len(job["progress"]["history"]) == 1, job["progress"]
    assert job["progress"]["final"]["map50"] is not None
    # The training child (which saw no callback in a DDP run) takes the epochs and final metrics from the file.
    record = msgspec.json.decode((run_dir / DDP_PROGRESS).read_bytes())
    assert len(record["history"]) == 1 and record["final"] is not None
    assert progress.take_ddp_record() and len(progress.history) == 1 and progress.final is not None
    assert (run_dir / "train" / "weights" / "best.pt").is_file()
    progress.writer.close()
    fresh.conn.close()
    db.conn.close()


def _spawn_family(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A stand-in training child started as the job starts it, with two processes of its own: one with a DDP
    launcher's command line and one that is none of training's."""
    from appliance.training.jobs import _start_child

    pids = tmp_path / "pids"
    started = (
        "import subprocess, sys, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
        "ddp = subprocess.Popen([*sleeper, '-m', 'torch.distributed.run'])\n"
        "other = subprocess.Popen(sleeper)\n"
        f"open({str(pids)!r}, 'w').write(f'{{ddp.pid}} {{other.pid}}')\n"
        "time.sleep(120)\n"
    )
    child = _start_child([sys.executable, "-c", started, "appliance.training.child"])
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=20)
    return child, [int(p) for p in pids.read_text().split()]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_training_child_leaves_no_ddp_process_behind(tmp_path: Path) -> None:
    # The OOM killer takes the training child: Ultralytics' DDP launcher and workers would train on, writing
    # into a run the worker has already failed. Stopping the child stops its process group's training too.
    from appliance.training.jobs import PID_FILE, _kill_leftover_child, _stop_child

    child, (ddp, other) = _spawn_family(tmp_path)
    assert os.getpgid(ddp) == child.pid != os.getpgid(0)  # a group of its own
    child.kill()
    child.wait()
    assert _alive(ddp)  # PDEATHSIG does not reach a grandchild
    _stop_child(child)
    wait_for(lambda: not _alive(ddp), timeout=10)
    assert _alive(other)  # not one of training's: left alone
    os.kill(other, 9)

    # The worker itself died: at its restart, the pid file of the run leads to the group.
    again = tmp_path / "again"
    again.mkdir()
    child, (ddp, other) = _spawn_family(again)
    (again / PID_FILE).write_text(str(child.pid))
    _kill_leftover_child(again)
    wait_for(lambda: not _alive(ddp), timeout=10)
    assert child.wait(10) == -9
    os.kill(other, 9)
