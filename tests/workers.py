"""Test helpers: `appliance worker` as a real subprocess, a synthetic dataset put in through the API, wait_for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import API, REPO, create_dataset, terminate, upload
from tests.models import CLASSES, synthetic_jpeg


class WorkerProcess:
    """`python -m appliance worker` on a data folder, the way systemd runs it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(data_dir),
            "APPLIANCE_WORKER_POLL_S": "0.2",
            "APPLIANCE_HEARTBEAT_S": "1",
            **(env or {}),
        }
        self.env.pop("APPLIANCE_CONFIG", None)
        self.log_path = data_dir.parent / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "worker"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def kill(self) -> None:
        """kill -9: no cleanup at all, like a crash or a power cut."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        terminate(self.process, 30)
        if hasattr(self, "log") and not self.log.closed:
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def build_synthetic_dataset(
    client: Any,
    headers: dict[str, str],
    name: str = "shapes",
    count: int = 16,
    size: int = 96,
    seed0: int = 0,
) -> dict[str, Any]:
    """Create a dataset of coloured shapes through the API: upload the images, PUT their boxes."""
    dataset = create_dataset(client, headers, name=name, classes=list(CLASSES))
    files: list[tuple[str, bytes]] = []
    boxes_by_name = {}
    for seed in range(seed0, seed0 + count):
        data, boxes = synthetic_jpeg(seed, size)
        files.append((f"shape-{seed:05d}.jpg", data))
        boxes_by_name[f"shape-{seed:05d}.jpg"] = boxes
    added = upload(client, headers, dataset["id"], files)["added"]
    for image in added:
        body = {
            "version": image["version"],
            "boxes": [
                {"class_id": c, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
                for c, x1, y1, x2, y2 in boxes_by_name[image["original_name"]]
            ],
        }
        response = client.put(f"{API}/images/{image['id']}/annotations", json=body, headers=headers)
        assert response.status_code == 200, response.text
    return dataset


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    what: str = "the condition",
    interval: float = 0.05,
    on_timeout: str = "",
) -> Any:
    """Poll `predicate` until it returns something truthy and return that; AssertionError after `timeout`.

    The default interval suits cheap checks (a file, a status dict); pass a longer one for HTTP polling."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{on_timeout}")
