"""Training benchmark: `appliance worker` through the API vs the plain `yolo` CLI, and snapshot preparation.

(a) the same synthetic dataset and parameters trained by `appliance worker` (job created with
    POST /training-jobs, progress polled), (b) trained directly with `.venv/bin/yolo train data=<the
    job's own data.yaml>` in the same offline environment. Per-epoch wall time comes from each run's
    results.csv (`time` is cumulative seconds since the training loop started); the first epoch is
    reported apart (warm-up, dataloader start) and the ratio uses the later epochs.
(c) snapshot preparation (split + symlinks + labels + data.yaml + the snapshot table) for a dataset of
    100,000 labeled images whose catalog rows are generated directly in SQLite (--quick: 20,000).

Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from litestar.testing import TestClient  # noqa: E402

from appliance.clock import now_iso  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database, write_transaction  # noqa: E402
from appliance.inference.ultralytics_env import prepare_ultralytics_env  # noqa: E402
from appliance.server import create_app  # noqa: E402
from appliance.training.snapshot import build_snapshot  # noqa: E402
from tests.helpers import API, setup_admin  # noqa: E402
from tests.workers import WorkerProcess, build_synthetic_dataset, wait_for  # noqa: E402


def epoch_times(results_csv: Path) -> list[float]:
    with results_csv.open() as handle:
        cumulative = [float(row["time"]) for row in csv.DictReader(handle)]
    return [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]


def train_via_worker(root: Path, images: int, params: dict[str, Any]) -> dict[str, Any]:
    data = root / "data"
    config = load_config(env={}, data_dir=str(data), runtime_dir=str(root / "run"))
    with TestClient(
        base_url="http://localhost.localdomain", app=create_app(config), raise_server_exceptions=False
    ) as client:
        admin = setup_admin(client)
        dataset = build_synthetic_dataset(client, admin, count=images)
        # Production timings (the test defaults poll and heartbeat faster).
        worker = WorkerProcess(
            data, env={"APPLIANCE_WORKER_POLL_S": "1", "APPLIANCE_HEARTBEAT_S": "5"}
        ).start()
        try:
            time.sleep(0.5)
            started = time.perf_counter()
            job = client.post(
                f"{API}/training-jobs", json={"dataset_id": dataset["id"], **params}, headers=admin
            )
            assert job.status_code == 201, job.text
            job_id = job.json()["id"]
            done = wait_for(
                lambda: (
                    (j := client.get(f"{API}/training-jobs/{job_id}", headers=admin).json())["status"]
                    in ("completed", "failed", "cancelled")
                    and j
                ),
                1800,
                "the training job",
                interval=1.0,  # a client polling, as the console does; the CLI run has none
            )
            wall = time.perf_counter() - started
        finally:
            worker.stop()
    if done["status"] != "completed":
        raise SystemExit(f"worker run ended {done['status']}: {done['error']}\n{done['log_tail']}")
    run = data / "runs" / str(job_id)
    return {
        "wall_s": wall,
        "epochs": epoch_times(run / "train" / "results.csv"),
        "data_yaml": run / "data.yaml",
        "config_dir": data / "ultralytics",
        "network_attempts": len(done["result"]["network_attempts"]),
    }


def train_via_cli(root: Path, data_yaml: Path, config_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, **prepare_ultralytics_env(config_dir), "YOLO_VERBOSE": "True"}
    project = root / "cli"
    command = [
        str(Path(sys.executable).parent / "yolo"),
        "train",
        f"data={data_yaml}",
        f"model={params['base_model']}",
        f"epochs={params['epochs']}",
        f"imgsz={params['imgsz']}",
        f"batch={params['batch']}",
        f"patience={params['patience']}",
        f"workers={params['workers']}",
        f"seed={params['seed']}",
        f"plots={params['plots']}",
        "device=cpu",
        f"project={project}",
        "name=train",
        "exist_ok=True",
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(
            f"yolo CLI failed ({completed.returncode}):\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    return {"wall_s": wall, "epochs": epoch_times(project / "train" / "results.csv")}


def bench_snapshot(root: Path, count: int) -> dict[str, Any]:
    """Catalog rows for `count` labeled images (1-3 boxes each) straight into SQLite, then one snapshot."""
    data = root / "data"
    db_path = data / "appliance.db"
    data.mkdir(parents=True, exist_ok=True)
    db = open_database(db_path)
    migrate(db, db_path)
    rng = random.Random(0)
    now = now_iso()
    started = time.perf_counter()
    with write_transaction(db):
        db.execute(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'bench', 'x', 'admin', ?)",
            [now],
        )
        classes = [{"name": f"class{i}", "color": "#ff0000"} for i in range(5)]
        db.execute(
            "INSERT INTO datasets (id, name, owner_id, classes, created_at, updated_at) VALUES (1, 'big', 1, ?, ?, ?)",
            [json.dumps(classes), now, now],
        )
        db.conn.executemany(
            "INSERT INTO image_files (id, sha256, size, width, height, format, created_at) VALUES (?, ?, 1, 640, 480, 'jpeg', ?)",
            [(i, f"{i:064x}", now) for i in range(1, count + 1)],
        )
        db.conn.executemany(
            "INSERT INTO images (id, dataset_id, file_id, status, version, box_count, added_at) VALUES (?, 1, ?, 'labeled', 1, 0, ?)",
            [(i, i, now) for i in range(1, count + 1)],
        )
        boxes = []
        for image_id in range(1, count + 1):
            for _ in range(rng.randint(1, 3)):
                x, y = rng.uniform(0, 500), rng.uniform(0, 350)
                boxes.append((image_id, rng.choice([0, 0, 0, 1, 1, 2, 3, 4]), x, y, x + 100, y + 100, now))
        db.conn.executemany(
            """INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, created_at)
               VALUES (?, 1, ?, ?, ?, ?, ?, 6, ?)""",
            boxes,
        )
    generate_s = time.perf_counter() - started
    run_dir = data / "runs" / "1"
    run_dir.mkdir(parents=True)
    with write_transaction(db):
        db.execute("INSERT INTO jobs (id, kind, created_at) VALUES (1, 'train', ?)", [now])
    started = time.perf_counter()
    summary = build_snapshot(db, data, run_dir, 1, 1, val_ratio=0.2, seed=0)
    snapshot_s = time.perf_counter() - started
    db.conn.close()
    return {
        "images": count,
        "boxes": len(boxes),
        "generate_ms": round(generate_s * 1000),
        "snapshot_ms": round(snapshot_s * 1000),
        "snapshot_cpu_ms": round(summary.cpu_seconds * 1000),
        "train_images": summary.train_images,
        "val_images": summary.val_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small run (about a minute on an idle 2-core box)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.quick:
        images, snapshot_images = 48, 20_000
        params = {"epochs": 4, "imgsz": 128, "batch": 8}
    else:
        images, snapshot_images = 200, 100_000
        params = {"epochs": 5, "imgsz": 160, "batch": 8}
    params.update(base_model="yolov8n.yaml", patience=50, workers=0, seed=0, plots=False, device="cpu")
    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        worker_run = train_via_worker(root / "worker", images, params)
        cli_run = train_via_cli(root / "cli", worker_run["data_yaml"], worker_run["config_dir"], params)
        snapshot = bench_snapshot(root / "snapshot", snapshot_images)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    def later(epochs: list[float]) -> list[float]:
        return epochs[1:] if len(epochs) > 1 else epochs

    # On a shared machine other load only ever adds time: the fastest later epoch is the fairest figure.
    worker_epoch = min(later(worker_run["epochs"]))
    cli_epoch = min(later(cli_run["epochs"]))
    figures = {
        "quick": args.quick,
        "device": "cpu",
        "dataset_images": images,
        "epochs": params["epochs"],
        "imgsz": params["imgsz"],
        "batch": params["batch"],
        "worker_epoch_ms": round(worker_epoch * 1000),  # fastest epoch after the first
        "cli_epoch_ms": round(cli_epoch * 1000),
        "epoch_time_ratio": round(worker_epoch / cli_epoch, 3),
        "worker_epoch_mean_ms": round(statistics.mean(later(worker_run["epochs"])) * 1000),
        "cli_epoch_mean_ms": round(statistics.mean(later(cli_run["epochs"])) * 1000),
        "worker_first_epoch_ms": round(worker_run["epochs"][0] * 1000),
        "cli_first_epoch_ms": round(cli_run["epochs"][0] * 1000),
        "worker_wall_ms": round(worker_run["wall_s"] * 1000),
        "cli_wall_ms": round(cli_run["wall_s"] * 1000),
        "wall_ratio": round(worker_run["wall_s"] / cli_run["wall_s"], 3),
        "worker_network_attempts": worker_run["network_attempts"],
        "snapshot_images": snapshot["images"],
        "snapshot_boxes": snapshot["boxes"],
        "snapshot_ms": snapshot["snapshot_ms"],
        "snapshot_cpu_ms": snapshot["snapshot_cpu_ms"],
        "snapshot_catalog_generate_ms": snapshot["generate_ms"],
        "snapshot_note": "full size (100,000 images) only without --quick"
        if args.quick
        else "100,000 images",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
