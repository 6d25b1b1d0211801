"""Camera sources without a camera (MJPEG-over-HTTP on loopback, a looped video file) and a deployed tiny model."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.models.artifacts import artifact_name, model_dir, update_model_metadata
from tests.models import CLASSES, synthetic_image


def synthetic_frames(count: int, size: int = 160, seed: int = 100) -> list[bytes]:
    """JPEG frames with the tiny model's shapes on them (scaled up from its 96 px training images)."""
    frames = []
    for i in range(count):
        image, _ = synthetic_image(seed + i, 96)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        frames.append(encoded.tobytes())
    return frames


def write_video(path: Path, count: int = 30, size: int = 160, fps: float = 30.0) -> Path:
    """An MJPG .avi that OpenCV reads back frame-exact."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened()
    for i in range(count):
        image, _ = synthetic_image(200 + i, 96)
        writer.write(cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames at a fixed rate to any number of clients; stop() cuts them all."""

    def __init__(self, fps: float = 30.0, size: int = 160, port: int = 0, frames: list[bytes] | None = None):
        self.fps = fps
        self.frames = frames or synthetic_frames(30, size)
        self.port = port
        self.served = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with owner._lock:
                    owner._clients.add(self.connection)
                period = 1.0 / owner.fps
                due = time.monotonic()
                i = 0
                try:
                    while not owner._stop.is_set():
                        jpeg = owner.frames[i % len(owner.frames)]
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(jpeg)).encode()
                            + b"\r\n\r\n"
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        owner.served += 1
                        i += 1
                        due += period
                        delay = due - time.monotonic()
                        if delay > 0:
                            owner._stop.wait(delay)
                        else:
                            due = time.monotonic()
                except OSError:
                    pass
                finally:
                    with owner._lock:
                        owner._clients.discard(self.connection)

        self._stop.clear()
        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The camera goes away: stop listening and cut every open stream."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            for conn in list(self._clients):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


MODEL_IMGSZ = 64


def export_tiny_onnx(tiny_yolo: Path, workdir: Path) -> Path:
    """The tiny YOLO exported to ONNX by the same code an export job runs (model_64.onnx)."""
    from appliance.inference.onnx_export import export_onnx

    out = workdir / artifact_name("onnx", "fp32", MODEL_IMGSZ, False)
    export_onnx(tiny_yolo, out, MODEL_IMGSZ, False, workdir / "ultralytics-config")
    return out


def deploy_model(config: Config, db: Database, onnx: Path, tiny_pt: Path, name: str = "tiny") -> int:
    """A models row in the inference layout (models/<id>/best.pt, model_<imgsz>.onnx, metadata.json), deployed."""
    with write_transaction(db):
        model_id = db.execute(
            "INSERT INTO models (name, classes, imgsz, created_at) VALUES (?, ?, ?, ?)",
            [name, json.dumps(CLASSES), MODEL_IMGSZ, now_iso()],
        ).lastrowid
        assert model_id is not None
        folder = model_dir(config, model_id)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_pt, folder / "best.pt")
        shutil.copyfile(onnx, folder / onnx.name)
        entry = {"format": "onnx", "precision": "fp32", "imgsz": MODEL_IMGSZ, "dynamic": False}
        fields = {"model_id": model_id, "name": name, "classes": CLASSES, "imgsz": MODEL_IMGSZ}
        update_model_metadata(config, model_id, fields, onnx.name, entry)
        db.execute("UPDATE models SET path = ? WHERE id = ?", [str(folder / "best.pt"), model_id])
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1")
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    return model_id


__all__ = ["MjpegServer", "deploy_model", "export_tiny_onnx", "write_video"]
