"""Helpers of the training tests: a data folder with the real app and a synthetic dataset, SSE reading, and
a worker killed in the middle of the second epoch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.server import create_app
from appliance.training.jobs import tail_text
from tests.helpers import API, LOCAL_URL, setup_admin
from tests.workers import WorkerProcess, build_synthetic_dataset, wait_for

TINY = {"base_model": "yolov8n.yaml", "imgsz": 64, "batch": 4, "workers": 0, "plots": False}
TERMINAL = ("completed", "failed", "cancelled")
RUN_TIMEOUT = 420  # seconds for one tiny training on a busy 2-core machine


class Env:
    """A data folder, the real app on it (TestClient), an admin and a synthetic dataset."""

    def __init__(self, root: Path, images: int = 16) -> None:
        self.root = root
        self.data = root / "data"
        self.config: Config = load_config(env={}, data_dir=str(self.data), runtime_dir=str(root / "run"))
        self._client_cm = TestClient(
            base_url=LOCAL_URL, app=create_app(self.config), raise_server_exceptions=False
        )
        self.client = self._client_cm.__enter__()
        self.admin = setup_admin(self.client)
        self.dataset = build_synthetic_dataset(self.client, self.admin, count=images)

    def close(self) -> None:
        self._client_cm.__exit__(None, None, None)

    def start_job(self, **params: Any) -> dict[str, Any]:
        body = {"dataset_id": self.dataset["id"], **TINY, **params}
        response = self.client.post(f"{API}/training-jobs", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.client.get(f"{API}/training-jobs/{job_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: int, statuses: tuple[str, ...], worker: WorkerProcess) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["status"] in statuses and j,
            RUN_TIMEOUT,
            f"job {job_id} to reach {statuses}",
            interval=0.5,
            on_timeout=worker.log_text()[-3000:] + tail_text(self.run_dir(job_id) / "train.log"),
        )

    def run_dir(self, job_id: int) -> Path:
        return self.data / "runs" / str(job_id)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.config.db_path)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()


def job_events(env: Env, job_id: int, last_event_id: int | None = None) -> list[dict[str, Any]]:
    """The job's server-sent events as the console reads them (a finished job's stream ends by itself)."""
    headers = dict(env.admin)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = env.client.get(f"{API}/training-jobs/{job_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def kill_mid_second_epoch(
    env: Env, epochs: int, graceful: bool = False
) -> tuple[dict[str, Any], WorkerProcess]:
    """Start a job on a worker of its own, then kill -9 (or SIGTERM) that worker in the second epoch."""
    worker = WorkerProcess(env.data, env={"TRAIN_CHILD_BATCH_DELAY_S": "0.4"}).start()
    job = env.start_job(epochs=epochs)
    wait_for(
        lambda: (
            (j := env.job(job["id"]))["epoch"] >= 1 and 1 <= j["batch"] < j["batches"] and j["epoch"] < epochs
        ),
        RUN_TIMEOUT,
        "the second epoch to start",
        interval=0.1,
        on_timeout=worker.log_text()[-3000:],
    )
    assert (env.run_dir(job["id"]) / "checkpoint" / "last.json").exists()
    child_pid = int((env.run_dir(job["id"]) / "child.pid").read_text())
    if graceful:
        worker.stop()  # SIGTERM, as systemd stops it: the child is terminated, the job left running
        assert worker.process is not None and worker.process.returncode == 0, worker.log_text()[-2000:]
        assert "left running for recovery" in worker.log_text()
    else:
        worker.kill()
    # The training child dies with its worker (PR_SET_PDEATHSIG).
    wait_for(lambda: not Path(f"/proc/{child_pid}").exists() or _zombie(child_pid), 20, "the child to die")
    assert env.job(job["id"])["status"] == "running"
    return job, worker


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True
