"""Training on the box: validation, a run, cancel, OOM retry, booking a finished run, no network, SSE.

The e2e tests put a synthetic shapes dataset in through the API and run `appliance worker` as a real
subprocess on the same data folder; each trains yolov8n.yaml at 64 px for a couple of epochs on CPU.
Crash recovery (kill -9, corrupt checkpoint, SIGTERM) is in test_training_recovery.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.system.service import cuda_device_count
from appliance.training.checkpoints import CheckpointError, check_checkpoint, save_checkpoint_copy
from appliance.training.contracts import ChildResult, MalformedRecord, read_record
from appliance.training.network_audit import NetworkAudit
from appliance.training.snapshot import split_images
from tests.helpers import API, REPO, create_dataset, create_user, image_bytes, upload
from tests.models import CLASSES
from tests.training_support import RUN_TIMEOUT, TERMINAL, TINY, Env, job_events
from tests.workers import WorkerProcess, build_synthetic_dataset, wait_for


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = Env(tmp_path_factory.mktemp("training"))
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def worker(env: Env) -> Iterator[WorkerProcess]:
    # A short pause per batch keeps a tiny run long enough to cancel mid-epoch.
    process = WorkerProcess(env.data, env={"TRAIN_CHILD_BATCH_DELAY_S": "0.3"}).start()
    yield process
    process.stop()


# --- fast: validation, base models, pure functions -------------------------------------------------------


def test_validation_errors_create_nothing(env: Env) -> None:
    client, admin, dataset_id = env.client, env.admin, env.dataset["id"]
    empty = create_dataset(client, admin, name="unlabeled", classes=["a"])
    upload(client, admin, empty["id"], [("a.jpg", image_bytes(seed=101)), ("b.jpg", image_bytes(seed=102))])
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"dataset_id": 9999}, 404, "not found"),
        ({"dataset_id": empty["id"]}, 422, "no labeled images"),
        ({"base_model": "yolov99z.yaml"}, 422, "unknown"),
        ({"base_model": "weights:missing.pt"}, 422, "no weights file"),
        ({"base_model": "model:12345"}, 422, "model 12345"),
        ({"device": "0"}, 422, "no NVIDIA GPU")
        if not cuda_device_count()
        else ({"device": "15"}, 422, "numbered"),
        ({"imgsz": 100}, 400, "multiple of 32"),
        ({"imgsz": 16}, 400, "imgsz"),
        ({"epochs": 0}, 400, "epochs"),
        ({"epochs": 5000}, 400, "epochs"),
        ({"batch": 0}, 400, "batch"),
        ({"patience": -1}, 400, "patience"),
        ({"device": "gpu"}, 400, "device"),
        ({"val_ratio": 0.9}, 400, "val_ratio"),
        ({"seed": -1}, 400, "seed"),
        ({"learning_rate": 1}, 400, "learning_rate"),
    ]
    for change, status, reason in cases:
        body = {"dataset_id": dataset_id, **TINY, **change}
        response = client.post(f"{API}/training-jobs", json=body, headers=admin)
        assert response.status_code == status, (change, response.text)
        detail = response.json()["detail"]
        assert response.json()["status_code"] == status and reason in detail, (change, detail)
    viewer = create_user(client, admin, "watcher", "viewer")
    response = client.post(f"{API}/training-jobs", json={"dataset_id": dataset_id, **TINY}, headers=viewer)
    assert response.status_code in (403, 404), response.text
    assert env.sql("SELECT COUNT(*) FROM jobs WHERE kind = 'train'") == [(0,)]
    assert not (env.data / "runs").exists()


def test_base_models_lists_architectures_and_weights(env: Env) -> None:
    weights = env.data / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "factory.pt").write_bytes(b"placeholder")
    response = env.client.get(f"{API}/models/base", headers=env.admin)
    assert response.status_code == 200
    ids = {m["id"]: m for m in response.json()}
    assert {"yolov8n.yaml", "yolov8s.yaml", "yolo11n.yaml", "yolo11s.yaml"} <= set(ids)
    assert ids["weights:factory.pt"]["kind"] == "weights"
    (weights / "factory.pt").unlink()


def test_fine_tuning_needs_the_base_models_dataset_to_be_readable(env: Env) -> None:
    # A model trained on the admin's private dataset: its weights carry that data, so a labeler who cannot
    # read the dataset can neither see the model as a base nor start from it by guessing its id.
    weights = env.root / "private-best.pt"
    weights.write_bytes(b"placeholder")
    conn = sqlite3.connect(env.config.db_path)
    model_id = conn.execute(
        "INSERT INTO models (name, dataset_id, path, created_at) VALUES ('private', ?, ?, '2026-01-01T00:00:00Z')",
        (env.dataset["id"], str(weights)),
    ).lastrowid
    conn.commit()
    conn.close()
    try:
        labeler = create_user(env.client, env.admin, "tuner", "labeler")
        own = build_synthetic_dataset(env.client, labeler, name="tuner's", count=2)
        bases = {m["id"] for m in env.client.get(f"{API}/models/base", headers=labeler).json()}
        assert f"model:{model_id}" not in bases
        body = {**TINY, "dataset_id": own["id"], "base_model": f"model:{model_id}"}
        response = env.client.post(f"{API}/training-jobs", json=body, headers=labeler)
        assert response.status_code == 422 and f"model {model_id}" in response.json()["detail"], response.text
        admin_bases = {m["id"] for m in env.client.get(f"{API}/models/base", headers=env.admin).json()}
        assert f"model:{model_id}" in admin_bases
        assert env.sql("SELECT COUNT(*) FROM jobs WHERE kind = 'train'") == [(0,)]
    finally:
        conn = sqlite3.connect(env.config.db_path)
        conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
        conn.commit()
        conn.close()


def test_event_cursor_beyond_any_row_id_is_refused_or_ignored(env: Env) -> None:
    job = env.start_job(epochs=1)
    cancel = env.client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=env.admin)
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelled"
    huge = "9" * 30
    response = env.client.get(f"{API}/training-jobs/{job['id']}/events?after={huge}", headers=env.admin)
    assert response.status_code == 400 and response.json()["status_code"] == 400, response.text
    # A nonsensical Last-Event-ID (it comes from the browser) is ignored: the whole stream, then its end.
    events = job_events(env, job["id"], last_event_id=int(huge))
    assert [e["kind"] for e in events] == ["status", "status", "end"] and events[-1]["status"] == "cancelled"


def test_job_params_are_stored_with_the_keys_the_console_reads(env: Env) -> None:
    job = env.start_job(epochs=3, name="keys")
    try:
        ((stored,),) = env.sql("SELECT params FROM jobs WHERE id = ?", (job["id"],))
        params = json.loads(stored)
        request = {"dataset_id", "base_model", "epochs", "imgsz", "batch", "patience", "device", "val_ratio"}
        request |= {"seed", "workers", "plots", "name"}
        # no recovery flags until recovery; the dataset's owner (and public flag, when set) for the model's visibility
        assert set(params) == request | {"classes", "model_source", "dataset_owner_id"}
        assert params["classes"] == CLASSES and params["epochs"] == 3 and params["name"] == "keys"
        assert "model_source" not in job["params"] and job["params"]["epochs"] == 3
    finally:
        env.client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=env.admin)


def test_a_malformed_run_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text('{"status": "exploded"}')
    with pytest.raises(MalformedRecord, match=r"result\.json is malformed"):
        read_record(tmp_path / "result.json", ChildResult)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "last.pt").write_bytes(b"x")
    (tmp_path / "checkpoint" / "last.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"last\.json is malformed"):
        check_checkpoint(tmp_path)


def test_split_is_deterministic_and_stratified() -> None:
    # 40 images of class 0, 10 of the rare class 1 (some with both), 5 backgrounds.
    images = (
        {i: {0} for i in range(40)} | {i: {0, 1} for i in range(40, 50)} | {i: set() for i in range(50, 55)}
    )
    train, val = split_images(images, 0.2, seed=7)
    again = split_images(dict(reversed(list(images.items()))), 0.2, seed=7)
    assert (train, val) == again
    assert sorted(train + val) == list(range(55)) and not set(train) & set(val)
    assert sum(1 for i in val if 1 in images[i]) == 2  # 20 % of the rare class
    assert sum(1 for i in val if not images[i]) == 1
    assert split_images(images, 0.2, seed=8) != (train, val)
    assert split_images({1: {0}, 2: {0}}, 0.05, seed=0)[1]  # tiny: still one validation image


def test_network_audit_records_only_outside_addresses(tmp_path: Path) -> None:
    audit = NetworkAudit(tmp_path / "net.jsonl")
    assert not audit.active
    audit.hook(NetworkAudit.PROBE, ())
    assert audit.active and audit.attempts == []
    audit.hook("socket.connect", (None, ("127.0.0.1", 8000)))
    audit.hook("socket.connect", (None, ("::1", 8000, 0, 0)))
    audit.hook("socket.connect", (None, "/run/some.sock"))
    audit.hook("socket.getaddrinfo", ("localhost", 80, 0, 0, 0))
    assert audit.attempts == []
    audit.hook("socket.connect", (None, ("140.82.112.3", 443)))
    audit.hook("socket.getaddrinfo", ("github.com", 443, 0, 0, 0))
    assert [a.host for a in audit.attempts] == ["140.82.112.3", "github.com"]
    assert [a.port for a in audit.attempts] == [443, 443]
    assert len((tmp_path / "net.jsonl").read_text().splitlines()) == 2


def test_checkpoint_checks(tmp_path: Path) -> None:
    last = tmp_path / "last.pt"
    last.write_bytes(b"x" * 1000)
    save_checkpoint_copy(last, tmp_path / "checkpoint", epoch=0, epochs=3)
    assert check_checkpoint(tmp_path).epoch == 0
    (tmp_path / "checkpoint" / "last.pt").write_bytes(b"y" * 1000)
    with pytest.raises(CheckpointError, match="corrupt"):
        check_checkpoint(tmp_path)
    save_checkpoint_copy(last, tmp_path / "checkpoint", epoch=2, epochs=3)
    with pytest.raises(CheckpointError, match="finished"):
        check_checkpoint(tmp_path)


def test_web_process_never_imports_torch() -> None:
    code = (
        "import sys; from appliance.server import create_app; from appliance.config import load_config;"
        "import appliance.training.controllers, appliance.training.service, appliance.jobs.sse;"
        "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


# --- slow: real training through the worker ----------------------------------------------------------------


@pytest.mark.slow
def test_training_runs_to_completed_with_metrics_model_plots_and_no_network(
    env: Env, worker: WorkerProcess
) -> None:
    job = env.start_job(epochs=2, plots=True)
    assert job["status"] == "pending" and job["epochs"] == 2
    done = env.wait_status(job["id"], TERMINAL, worker)
    assert done["status"] == "completed", (done["error"], done["log_tail"])
    assert [m["epoch"] for m in done["metrics"]] == [1, 2]
    for key in ("box_loss", "cls_loss", "precision", "recall", "map50", "map50_95", "lr"):
        assert done["metrics"][-1][key] is not None, key
    assert done["fraction"] == 1.0 and done["log_tail"]

    result = done["result"]
    assert result["network_attempts"] == [] and result["network_guard"]
    model_id = done["model_id"]
    assert model_id and result["model_id"] == model_id
    (row,) = env.sql(
        "SELECT name, dataset_id, job_id, base_model, classes, imgsz, params, metrics, snapshot, path, created_by "
        "FROM models WHERE id = ?",
        (model_id,),
    )
    name, dataset_id, job_id, base_model, classes, imgsz, params, metrics, snapshot, path, created_by = row
    assert (dataset_id, job_id, base_model, imgsz) == (env.dataset["id"], job["id"], "yolov8n.yaml", 64)
    assert json.loads(classes) == CLASSES and json.loads(params)["epochs"] == 2 and created_by
    assert "map50_95" in json.loads(metrics)
    assert (
        Path(path) == env.data / "models" / str(model_id) / "best.pt" and Path(path).stat().st_size > 100_000
    )
    snap = json.loads(snapshot)
    assert (
        snap["images"] == 16 and snap["train_images"] + snap["val_images"] == 16 and snap["val_images"] >= 2
    )
    # The exact images and annotation versions used.
    used = env.sql(
        "SELECT image_id, version, split FROM training_snapshot_images WHERE job_id = ?", (job["id"],)
    )
    assert len(used) == 16 and {v for _, v, _ in used} == {1}
    run = env.run_dir(job["id"])
    assert (run / "data.yaml").exists() and (run / "images" / "train").is_dir()
    link = next((run / "images" / "train").iterdir())
    assert link.is_symlink() and link.resolve().parent.parent == env.data / "images"
    label = (run / "labels" / "train" / link.with_suffix(".txt").name).read_text().split()
    assert int(label[0]) in (0, 1) and all(0 <= float(v) <= 1 for v in label[1:5])

    assert {"results.png", "confusion_matrix.png"} <= set(done["plots"])
    plot = env.client.get(f"{API}/training-jobs/{job['id']}/plots/results.png", headers=env.admin)
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad = env.client.get(f"{API}/training-jobs/{job['id']}/plots/args.yaml", headers=env.admin)
    assert bad.status_code == 404

    listing = env.client.get(f"{API}/training-jobs", headers=env.admin).json()
    assert listing[0]["id"] == job["id"] and listing[0]["status"] == "completed"
    bases = {m["id"] for m in env.client.get(f"{API}/models/base", headers=env.admin).json()}
    assert f"model:{model_id}" in bases

    # SSE: the whole stream of a finished job, then a resumed one after Last-Event-ID.
    events = job_events(env, job["id"])
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "end" and events[-1]["status"] == "completed"
    assert "batch" in kinds and kinds.count("epoch") == 2 and "snapshot" in kinds
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses == ["pending", "running", "completed"]
    middle = next(e for e in events if e["kind"] == "epoch")["id"]
    later = job_events(env, job["id"], last_event_id=middle)
    assert (
        later[0]["id"] > middle
        and [e["id"] for e in later[:-1]] == [e["id"] for e in events if e["id"] > middle][:-1]
    )


@pytest.mark.slow
def test_cancel_mid_run_keeps_best_weights_as_a_model(env: Env, worker: WorkerProcess) -> None:
    job = env.start_job(epochs=20)
    wait_for(
        lambda: env.job(job["id"])["batch"] >= 1,
        RUN_TIMEOUT,
        "the first batches",
        interval=0.2,
        on_timeout=worker.log_text()[-3000:],
    )
    response = env.client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=env.admin)
    assert response.status_code == 202 and response.json()["cancel_requested"]
    done = env.wait_status(job["id"], TERMINAL, worker)
    assert done["status"] == "cancelled", (done["error"], done["log_tail"])
    assert 1 <= len(done["metrics"]) < 20
    model_id = done["model_id"]
    assert model_id, done["result"]
    (path,) = env.sql("SELECT path FROM models WHERE id = ?", (model_id,))[0]
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["model"] is not None and list(checkpoint["model"].names.values()) == CLASSES
    again = env.client.post(f"{API}/training-jobs/{job['id']}/cancel", headers=env.admin)
    assert again.status_code == 409


@pytest.mark.slow
def test_out_of_memory_is_retried_once_with_half_the_batch(tmp_path: Path) -> None:
    # Simulated: no GPU here. The child raises a CUDA-style OOM while the batch is above 2.
    oom = Env(tmp_path, images=12)
    process = WorkerProcess(oom.data, env={"TRAIN_CHILD_FAKE_OOM": "2"})
    try:
        job = oom.start_job(epochs=1, batch=4)
        process.start()
        done = oom.wait_status(job["id"], TERMINAL, process)
    finally:
        process.stop()
        oom.close()
    assert done["status"] == "completed", (done["error"], done["log_tail"])
    assert done["result"]["oom_retry"]["from_batch"] == 4 and done["result"]["oom_retry"]["to_batch"] == 2
    assert done["result"]["batch"] == 2 and "out of memory" in done["result"]["oom_retry"]["error"]


@pytest.mark.slow
def test_finished_run_interrupted_before_booking_is_finalized_without_training(
    env: Env, worker: WorkerProcess, tmp_path: Path
) -> None:
    # A run of its own (not another test's): the test must pass alone and in any order.
    job_id = env.start_job(epochs=1)["id"]
    finished = env.wait_status(job_id, TERMINAL, worker)
    assert finished["status"] == "completed", (finished["error"], finished["log_tail"])
    model_id = finished["model_id"]
    assert read_record(env.run_dir(job_id) / "result.json", ChildResult).status == "completed"
    # The worker died after the child wrote its final record but before the model row and the job's end.
    log = env.run_dir(job_id) / "train.log"
    starts = log.read_text().count("=== job")
    conn = sqlite3.connect(env.config.db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        "UPDATE jobs SET status = 'running', model_id = NULL, worker_pid = 999999, heartbeat_at = 0 WHERE id = ?",
        (job_id,),
    )
    conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
    conn.commit()
    conn.close()
    second = WorkerProcess(env.data)
    second.log_path = tmp_path / "worker.log"
    second.start()
    try:
        done = env.wait_status(job_id, TERMINAL, second)
    finally:
        second.stop()
    assert done["status"] == "completed" and done["model_id"] and done["attempts"] == 2
    assert log.read_text().count("=== job") == starts  # no new training child
    assert env.sql("SELECT job_id FROM models WHERE id = ?", (done["model_id"],)) == [(job_id,)]
