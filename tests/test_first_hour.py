"""The first hour of a new box, as one black-box test over HTTP: `appliance run` on a fresh data folder,
the setup code from `appliance setup-code`, a dataset labeled through the API, a tiny model trained, exported
and deployed, a camera on a video file streaming detections over the WebSocket, a triggered inspection event, a
frame captured back into the dataset with pre-labels, and the supervisor restarting the worker killed on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.camera_sources import write_video
from tests.helpers import ADMIN, API, REPO, auth, free_port, setup_code_from_cli
from tests.models import CLASSES, synthetic_jpeg

pytestmark = pytest.mark.slow


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def worker_pid(supervisor_pid: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == supervisor_pid and b"worker" in cmdline:
            return int(entry.name)
    return None


def test_first_hour_from_an_empty_box_to_a_live_camera(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    env.pop("APPLIANCE_CONFIG", None)
    log_path = tmp_path / "run.log"
    log = log_path.open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        http = httpx.Client(base_url=f"{base}{API}", timeout=30)
        wait(lambda: http.get("/health").status_code == 200, 60, "the web process")
        assert http.get("/auth/session").json()["setup_required"] is True

        # The owner reads the code on the box's shell and creates the admin with it.
        code = setup_code_from_cli(data)
        assert http.post("/auth/setup", json={**ADMIN, "setup_code": "WRONG"}).status_code == 403
        created = http.post("/auth/setup", json={**ADMIN, "setup_code": code})
        assert created.status_code == 201, created.text
        http.headers.update(auth(created.json()["access_token"]))

        # Worker and camera are up, and training is possible here.
        wait(
            lambda: (s := http.get("/system").json())["processes"]["worker"]["alive"]
            and s["processes"]["camera"]["alive"],
            60, "worker and camera heartbeats",
        )  # fmt: skip
        assert http.get("/system").json()["training_available"] is True
        assert any(b["id"] == "yolov8n.yaml" for b in http.get("/models/base").json())

        # A dataset, 16 images uploaded, each labeled with its known boxes.
        dataset = http.post("/datasets", json={"name": "parts", "classes": CLASSES}).json()
        samples = [synthetic_jpeg(seed) for seed in range(16)]
        files = [("files", (f"part-{n:02d}.jpg", jpeg, "image/jpeg")) for n, (jpeg, _) in enumerate(samples)]
        uploaded = http.post(f"/datasets/{dataset['id']}/images", files=files)
        assert uploaded.status_code == 201, uploaded.text
        added = uploaded.json()["added"]
        assert len(added) == 16
        for image, (_, boxes) in zip(added, samples, strict=True):
            body = {
                "version": image["version"],
                "boxes": [
                    {"class_id": c, "x1": x1, "y1": y1, "x2": x2, "y2": y2} for c, x1, y1, x2, y2 in boxes
                ],
            }
            assert http.put(f"/images/{image['id']}/annotations", json=body).status_code == 200
        stats = http.get(f"/datasets/{dataset['id']}/stats").json()
        assert stats["by_status"]["labeled"] == 16

        # The supervisor brings a killed worker back before anything is queued.
        first_worker = wait(lambda: worker_pid(run.pid), 10, "the worker child")
        os.kill(first_worker, signal.SIGKILL)
        wait(lambda: (p := worker_pid(run.pid)) and p != first_worker, 30, "the worker restarted")
        wait(
            lambda: http.get("/system").json()["processes"]["worker"]["alive"],
            60,
            "the new worker's heartbeat",
        )

        # Train a tiny model, export it to ONNX, deploy it.
        job = http.post(
            "/training-jobs",
            json={"dataset_id": dataset["id"], "base_model": "yolov8n.yaml", "epochs": 2, "imgsz": 64,
                  "batch": 8, "workers": 0, "plots": False},
        )  # fmt: skip
        assert job.status_code == 201, job.text
        done = wait(
            lambda: (j := http.get(f"/training-jobs/{job.json()['id']}").json())["status"]
            in ("completed", "failed", "cancelled") and j,
            600, "the training job",
        )  # fmt: skip
        assert done["status"] == "completed", done.get("error") or done.get("log_tail")
        model_id = done["model_id"]
        export = http.post(f"/models/{model_id}/exports", json={"format": "onnx", "imgsz": 64})
        assert export.status_code in (200, 201), export.text
        wait(
            lambda: any(e["status"] == "completed" for e in http.get(f"/models/{model_id}").json()["exports"]),
            300, "the ONNX export",
        )  # fmt: skip
        assert http.post(f"/models/{model_id}/deploy").status_code in (200, 201)

        # A camera on a video file, with a low threshold: the two-epoch model finds something.
        video = write_video(tmp_path / "line.avi", count=30, size=160)
        settings = {"source_type": "file", "source": str(video), "confidence": 0.001}
        created = http.post("/cameras", json={"name": "line 1", "settings": settings, "enabled": True})
        assert created.status_code == 201, created.text
        camera_id = created.json()["id"]
        headers = {"Authorization": http.headers["Authorization"]}
        frames: list[dict[str, Any]] = []
        url = f"ws://127.0.0.1:{port}{API}/cameras/{camera_id}/ws"
        with connect(url, origin=base, additional_headers=headers) as ws:  # type: ignore[arg-type]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(f["detections"] for f in frames):
                message = json.loads(ws.recv(timeout=30))
                if message["type"] == "frame":
                    frames.append(message)
        assert frames and any(f["detections"] for f in frames), "no live frame with detections"
        assert all(f["model_id"] == model_id for f in frames if f["detections"])

        # A triggered inspection: an event with a verdict, a snapshot, and the trigger's id.
        trigger = http.post(f"/cameras/{camera_id}/trigger")
        assert trigger.status_code == 202, trigger.text
        trigger_id = trigger.json()["trigger_id"]
        done = wait(
            lambda: (t := http.get(f"/cameras/{camera_id}/triggers/{trigger_id}").json())["status"] == "done" and t,
            30, "the triggered inspection",
        )  # fmt: skip
        event = http.get(f"/events/{done['event_id']}").json()
        assert (
            event["trigger_id"] == trigger_id and event["verdict"] == "ok" and event["model_id"] == model_id
        )
        assert http.get(f"/events/{event['id']}/snapshot").content[:2] == b"\xff\xd8"

        # The live frame goes back into the dataset with the model's boxes as pre-labels.
        captured = http.post(f"/cameras/{camera_id}/capture", json={"dataset_id": dataset["id"]})
        assert captured.status_code == 201, captured.text
        image_id = captured.json()["image_id"]
        listed = http.get(f"/datasets/{dataset['id']}/images", params={"status": "unlabeled"}).json()
        assert image_id in [i["id"] for i in listed["items"]]
        prelabels = http.get(f"/images/{image_id}/annotations").json()["boxes"]
        assert prelabels and all(b["source"] == "model" and b["confidence"] is not None for b in prelabels)

        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        log.close()
