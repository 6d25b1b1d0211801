"""Live camera: settings API, capture thread and reconnects, MJPEG/WebSocket fan-out, model switching, capture."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.camera import service
from appliance.camera.publish import read_frame, read_status
from appliance.camera.runner import CameraRunner
from appliance.camera.schemas import CameraSettings
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database, write_transaction
from tests.camera_sources import MjpegServer, deploy_model, write_video
from tests.helpers import API, LOCAL_URL, REPO, ServerProcess, create_dataset, create_user
from tests.models import CLASSES
from tests.workers import wait_for


def catalog(config: Config) -> Database:
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    return db


def url_settings(url: str, **extra: Any) -> CameraSettings:
    return CameraSettings(
        source_type="url", source=url, enabled=True, open_timeout_ms=2000, read_timeout_ms=1000, **extra
    )


@contextlib.contextmanager
def running_camera(config: Config) -> Iterator[CameraRunner]:
    """The camera process's loop in a thread of the test (same code as `appliance camera`)."""
    runner = CameraRunner(config)
    thread = threading.Thread(target=runner.run, name="test-camera", daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop.set()
        thread.join(15)
        assert not thread.is_alive(), "camera loop did not stop"


def status(config: Config) -> dict[str, Any]:
    found = read_status(config.runtime_path)
    return msgspec.to_builtins(found) if found is not None else {}


@pytest.fixture
def mjpeg() -> Iterator[MjpegServer]:
    server = MjpegServer(fps=30).start()
    yield server
    server.stop()


# --- settings, status, permissions (no camera running) -------------------------------------------


def test_settings_validation_and_roles(client: TestClient[Any], admin: dict[str, str]) -> None:
    response = client.get(f"{API}/camera", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["settings"]["enabled"] is False and body["updated_at"] is None
    assert body["gstreamer_available"] is False  # PyPI OpenCV has no GStreamer

    bad = [
        ({"source_type": "url", "source": "file:///etc/passwd"}, 422),
        ({"source_type": "v4l2", "source": "/etc/passwd"}, 422),
        ({"source_type": "gstreamer", "source": "videotestsrc ! filesink location=/tmp/x"}, 422),
        ({"source_type": "file", "source": "relative.avi"}, 422),
        ({"source_type": "url", "source": "http://cam/x", "confidence": 2}, 400),
        ({"source_type": "url", "source": "http://cam/x", "bogus": 1}, 400),
        ({"source_type": "url", "source": "http://cam/x", "auto_capture": True}, 422),
        ({"enabled": True}, 422),
    ]
    for payload, code in bad:
        response = client.put(f"{API}/camera", json=payload, headers=admin)
        assert response.status_code == code, (payload, response.text)
        assert set(response.json()) == {"status_code", "detail"}

    good = {"source_type": "v4l2", "source": "/dev/video0", "width": 1280, "height": 720, "fps": 30}
    response = client.put(f"{API}/camera", json=good, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["settings"]["width"] == 1280 and response.json()["updated_at"]

    labeler = create_user(client, admin, "lab", "labeler")
    viewer = create_user(client, admin, "view", "viewer")
    assert client.put(f"{API}/camera", json=good, headers=labeler).status_code == 403
    assert client.post(f"{API}/camera/start", headers=viewer).status_code == 403
    started = client.post(f"{API}/camera/start", headers=labeler)
    assert started.status_code == 200 and started.json()["settings"]["enabled"] is True
    stopped = client.post(f"{API}/camera/stop", headers=labeler)
    assert stopped.json()["settings"]["enabled"] is False
    assert client.get(f"{API}/camera", headers=viewer).status_code == 200
    client.cookies.clear()  # the logins above left a console cookie
    assert client.get(f"{API}/camera").status_code == 401


def test_status_offline_and_capture_refused_without_camera(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    response = client.get(f"{API}/camera/status", headers=admin)
    assert response.status_code == 200
    assert response.json()["state"] == "offline"
    dataset = create_dataset(client, admin)
    response = client.post(f"{API}/camera/capture", json={"dataset_id": dataset["id"]}, headers=admin)
    assert response.status_code == 503
    assert "not streaming" in response.json()["detail"]


def test_websocket_checks_origin_and_auth(client: TestClient[Any], admin: dict[str, str]) -> None:
    from litestar.exceptions import WebSocketDisconnect

    client.cookies.clear()  # setup left a console cookie; these sockets authenticate by header or not at all
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(f"{API}/camera/ws") as ws:
        ws.receive_text()  # no token: refused by the auth middleware
    evil = {**admin, "Origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"{API}/camera/ws", headers=evil) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 4403
    same = {**admin, "Origin": LOCAL_URL, "Host": LOCAL_URL.split("//")[1]}
    with client.websocket_connect(f"{API}/camera/ws", headers=same) as ws:
        message = json.loads(ws.receive_text())
    assert message["type"] == "status" and message["state"] == "offline"


# --- the capture loop (camera loop in a thread, no model) ------------------------------------------


def test_stream_survives_source_loss_and_picks_up_settings(
    config: Config, mjpeg: MjpegServer, tmp_path: Path
) -> None:
    db = catalog(config)
    service.store_settings(db, url_settings(mjpeg.url))
    with running_camera(config):
        wait_for(lambda: status(config).get("state") == "running" and status(config)["frames"] > 10)
        first = read_frame(config.runtime_path)
        assert first is not None and first.meta.width == 160 and first.meta.detections == []
        assert cv2.imdecode(np.frombuffer(first.jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (160, 160, 3)
        assert status(config)["model_note"] == "no model deployed"
        assert {"capture", "encode", "frame_age"} <= set(status(config)["timings"])

        # The camera goes away: the status says so, and the stream comes back with it.
        port = mjpeg.port
        mjpeg.stop()
        lost = wait_for(lambda: (s := status(config)).get("state") == "reconnecting" and s)
        assert lost["error"]
        frames_before = lost["frames"]
        back = MjpegServer(fps=30, port=port).start()
        try:
            wait_for(
                lambda: (
                    status(config).get("state") == "running" and status(config)["frames"] > frames_before + 10
                )
            )
            assert status(config)["reconnects"] >= 1 and status(config)["error"] is None

            # A settings change (another source) applies without a restart.
            video = write_video(tmp_path / "clip.avi", count=20, size=128, fps=30)
            service.store_settings(db, CameraSettings(source_type="file", source=str(video), enabled=True))
            wait_for(lambda: (f := read_frame(config.runtime_path)) is not None and f.meta.width == 128)
            assert status(config)["source"] == str(video)
            # The file loops: it keeps delivering after its 20 frames.
            seen = status(config)["frames"]
            wait_for(lambda: status(config)["frames"] > seen + 30)

            # Stop: the frame disappears and the state says stopped.
            service.store_settings(db, CameraSettings(source_type="file", source=str(video), enabled=False))
            wait_for(lambda: status(config).get("state") == "stopped")
            assert read_frame(config.runtime_path) is None
        finally:
            back.stop()


def test_unavailable_sources_say_why(config: Config) -> None:
    """No GStreamer in this OpenCV, no /dev/video99 here: the status names the problem, nothing crashes."""
    db = catalog(config)
    service.store_settings(
        db,
        CameraSettings(source_type="gstreamer", source="videotestsrc ! videoconvert ! appsink", enabled=True),
    )
    with running_camera(config):
        failed = wait_for(lambda: (s := status(config)).get("state") == "error" and s)
        assert "GStreamer" in failed["error"]
        service.store_settings(db, CameraSettings(source_type="v4l2", source="/dev/video99", enabled=True))
        missing = wait_for(lambda: (s := status(config)).get("state") == "reconnecting" and s)
        assert "/dev/video99" in missing["error"] and missing["source_type"] == "v4l2"


def test_a_deployed_model_that_cannot_load_leaves_the_stream_running(
    config: Config, mjpeg: MjpegServer
) -> None:
    """A deployed model without any export: the status says why, frames keep flowing without detections."""
    db = catalog(config)
    with write_transaction(db):
        db.execute(
            "INSERT INTO models (name, classes, created_at, deployed) VALUES ('unexported', '[]', '2026-01-01', 1)"
        )
    service.store_settings(db, url_settings(mjpeg.url))
    with running_camera(config):
        broken = wait_for(lambda: "could not be loaded" in (s := status(config)).get("model_note", "") and s)
        assert "export" in broken["model_note"] and broken["model_id"] is None
        frames = broken["frames"]
        wait_for(lambda: status(config)["frames"] > frames + 10 and status(config)["state"] == "running")
        frame = read_frame(config.runtime_path)
        assert frame is not None and frame.meta.detections == [] and frame.meta.model_id is None


def _read_mjpeg_parts(url: str, headers: dict[str, str], stop: threading.Event, out: list[bytes]) -> None:
    buffer = b""
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(b"\r\n\r\n")
                if start < 0:
                    break
                head = buffer[:start].decode(errors="replace")
                length = next(
                    (
                        int(line.split(":")[1])
                        for line in head.split("\r\n")
                        if line.lower().startswith("content-length")
                    ),
                    None,
                )
                if length is None or len(buffer) < start + 4 + length:
                    break
                out.append(buffer[start + 4 : start + 4 + length])
                buffer = buffer[start + 4 + length :]
            if stop.is_set():
                return


def _slow_viewer(port: int, token: str, stop: threading.Event, received: list[int]) -> None:
    """Reads the stream through a tiny socket buffer, a few KB every 100 ms (a phone on bad Wi-Fi)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {API}/camera/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    total = 0
    while not stop.is_set():
        data = sock.recv(2048)
        if not data:
            break
        total += len(data)
        received[0] = total
        time.sleep(0.1)
    sock.close()


def _published_rate(config: Config, seconds: float) -> float:
    start = status(config)["frames"]
    time.sleep(seconds)
    return (status(config)["frames"] - start) / seconds


def test_viewers_and_a_slow_viewer_do_not_slow_the_pipeline(tmp_path: Path, mjpeg: MjpegServer) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        token = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        config = load_config(env={}, data_dir=str(data))
        service.store_settings(catalog(config), url_settings(mjpeg.url))
        with running_camera(config):
            wait_for(lambda: status(config).get("frames", 0) > 15)
            alone = _published_rate(config, 2.0)

            stop = threading.Event()
            fast: list[list[bytes]] = [[], []]
            slow = [0]
            threads = [
                threading.Thread(
                    target=_read_mjpeg_parts,
                    args=(f"{server.url}{API}/camera/stream", headers, stop, parts),
                    daemon=True,
                )
                for parts in fast
            ]
            threads.append(
                threading.Thread(target=_slow_viewer, args=(server.port, token, stop, slow), daemon=True)
            )
            for thread in threads:
                thread.start()
            wait_for(lambda: all(len(parts) > 5 for parts in fast))
            published_before = status(config)["frames"]
            received_before = [len(parts) for parts in fast]
            watched = _published_rate(config, 2.0)
            published = status(config)["frames"] - published_before
            received = [len(parts) - before for parts, before in zip(fast, received_before, strict=True)]
            stop.set()
            for thread in threads:
                thread.join(5)

    # A 30 fps source: the pipeline keeps the source's rate with viewers as without them.
    assert alone > 10
    assert watched >= 0.7 * alone, (alone, watched)
    # Fast viewers see (nearly) every frame; the slow one got far less than everything and held nobody up.
    for count in received:
        assert count >= 0.5 * published, (count, published)
    frame_bytes = len(fast[0][-1])
    assert 0 < slow[0] < published * frame_bytes
    decoded = cv2.imdecode(np.frombuffer(fast[0][-1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (160, 160, 3)


def test_camera_and_web_modules_never_import_torch() -> None:
    code = (
        "import sys, appliance.server, appliance.camera.runner, appliance.camera.cli, appliance.inference.pipeline\n"
        "bad = [m for m in ('torch', 'ultralytics') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- with the tiny model (ONNX through the shared pipeline) -------------------------------------------


class CameraProcess:
    def __init__(self, data_dir: Path) -> None:
        self.log = data_dir.parent / "camera.log"
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir)}
        env.pop("APPLIANCE_CONFIG", None)
        self.handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "camera"],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            assert self.process.wait(15) == 0, self.log.read_text()[-3000:]
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.handle.close()


@pytest.mark.slow
def test_live_model_stream_websocket_capture_and_switch(
    tmp_path: Path, tiny_onnx: Path, tiny_yolo: Path
) -> None:
    from websockets.sync.client import connect

    data = tmp_path / "data"
    video = write_video(tmp_path / "line.avi", count=30, size=160, fps=15)
    with ServerProcess(data) as server:
        token = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        api = httpx.Client(base_url=f"{server.url}{API}", headers=headers, timeout=20)
        # Dataset classes in another order plus one the model lacks: pre-labels map by name.
        dataset = api.post(
            "/datasets", json={"name": "line", "classes": ["disc", "scratch", "square"]}
        ).json()
        config = load_config(env={}, data_dir=str(data))
        db = catalog(config)
        first_model = deploy_model(config, db, tiny_onnx, tiny_yolo, "first")
        # The 2-epoch tiny model is barely trained: its scores are around 0.006, so the threshold is tiny.
        settings = {"source_type": "file", "source": str(video), "confidence": 0.001}
        assert api.put("/camera", json=settings).status_code == 200
        assert api.post("/camera/start").status_code == 200
        camera = CameraProcess(data)
        try:
            wait_for(lambda: api.get("/camera/status").json()["model_id"] == first_model, timeout=30)

            # WebSocket: detections and timings per frame, from a same-origin browser.
            frames: list[dict[str, Any]] = []
            with connect(
                f"ws://127.0.0.1:{server.port}{API}/camera/ws",
                origin=server.url,  # type: ignore[arg-type]
                additional_headers=headers,
            ) as ws:
                while len(frames) < 10:
                    message = json.loads(ws.recv(timeout=10))
                    if message["type"] == "frame":
                        frames.append(message)
            assert any(f["detections"] for f in frames), "the tiny model found nothing in 10 frames"
            detection = next(d for f in frames for d in f["detections"])
            assert detection["class_name"] in CLASSES and 0 < detection["confidence"] <= 1
            assert {"capture", "preprocess", "inference", "postprocess", "encode", "frame_age"} <= set(
                frames[-1]["timings"]
            )
            assert all(f["model_id"] == first_model for f in frames)
            assert [f["seq"] for f in frames] == sorted({f["seq"] for f in frames})

            # MJPEG stream: real JPEG frames.
            parts: list[bytes] = []
            stop = threading.Event()
            reader = threading.Thread(
                target=_read_mjpeg_parts,
                args=(f"{server.url}{API}/camera/stream", headers, stop, parts),
                daemon=True,
            )
            reader.start()
            wait_for(lambda: len(parts) >= 3)
            stop.set()
            image = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape == (160, 160, 3)

            # Capture: the live frame with the model's boxes as pre-labels to review.
            wait_for(lambda: (f := read_frame(config.runtime_path)) is not None and f.meta.detections)
            response = api.post("/camera/capture", json={"dataset_id": dataset["id"]})
            assert response.status_code == 201, response.text
            result = response.json()
            annotations = api.get(f"/images/{result['image_id']}/annotations").json()
            assert annotations["status"] == "unlabeled"
            assert len(annotations["boxes"]) == result["boxes"]
            for box in annotations["boxes"]:
                assert box["source"] == "model" and 0 < box["confidence"] <= 1
                assert box["class_id"] in (0, 2)  # disc -> 0, square -> 2, never the model's raw ids
            assert result["skipped_classes"] == []

            # Deploying another model switches the live stream without stopping it.
            seq_before = api.get("/camera/status").json()["frames"]
            second_model = deploy_model(config, db, tiny_onnx, tiny_yolo, "second")
            wait_for(lambda: api.get("/camera/status").json()["model_id"] == second_model, timeout=30)
            assert api.get("/camera/status").json()["frames"] > seq_before
            assert api.get("/camera/status").json()["state"] == "running"

            # Auto-capture of uncertain frames, rate-limited.
            images_before = api.get(f"/datasets/{dataset['id']}").json()["image_count"]
            auto = {
                **settings,
                "enabled": True,
                "auto_capture": True,
                "auto_capture_dataset_id": dataset["id"],
                "auto_capture_below": 1.0,
                "auto_capture_interval_s": 1,
            }
            assert api.put("/camera", json=auto).status_code == 200
            started = time.monotonic()
            wait_for(
                lambda: api.get(f"/datasets/{dataset['id']}").json()["image_count"] >= images_before + 2,
                timeout=20,
            )
            elapsed = time.monotonic() - started
            assert (
                api.get(f"/datasets/{dataset['id']}").json()["image_count"] - images_before <= elapsed / 1 + 2
            )

            # No model: frames keep coming, without detections, and the status says why.
            with write_transaction(db):
                db.execute("UPDATE models SET deployed = 0")
            wait_for(
                lambda: api.get("/camera/status").json()["model_note"] == "no model deployed", timeout=15
            )
            frame = wait_for(lambda: (f := read_frame(config.runtime_path)) and f.meta.model_id is None and f)
            assert frame.meta.detections == []
        finally:
            camera.stop()
        assert api.get("/camera/status").json()["state"] in ("stopped", "offline")
