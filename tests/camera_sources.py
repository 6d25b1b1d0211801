"""Camera sources without a camera (MJPEG-over-HTTP on loopback, a looped video file) and a deployed tiny model."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2

from appliance.camera.runner import CameraProcess
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.models.artifacts import artifact_name, model_dir, update_model_metadata
from tests.models import CLASSES, synthetic_image
from tests.models import COLORS as COLOURS


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


@contextlib.contextmanager
def camera_process(config: Config) -> Iterator[CameraProcess]:
    """The camera process's main loop in a thread of the test (the same code `appliance camera` runs)."""
    process = CameraProcess(config)
    thread = threading.Thread(target=process.run, name="test-camera-process", daemon=True)
    thread.start()
    try:
        yield process
    finally:
        process.stop.set()
        thread.join(20)
        assert not thread.is_alive(), "camera process did not stop"


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


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with gi and GStreamer's RTSP server bindings


def rtsp_available() -> str | None:
    """Why no RTSP server can run here (None when it can)."""
    import subprocess

    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    if done.returncode != 0:
        return (
            "GStreamer's RTSP server is not installed: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
            + ("gstreamer1.0-plugins-ugly (requirements/apt.txt)")
        )
    return None


class RtspServer:
    """tests/rtsp_server.py on 127.0.0.1:<port> (H.264, 15 fps, basic auth when given a user); stop() kills it
    (the camera's outage), start() brings it back on the same port."""

    def __init__(self, folder: Path, user: str = "", password: str = "") -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.user, self.password = user, password
        self.log_path = folder / "rtsp-server.log"
        self.process: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 20.0) -> RtspServer:
        import subprocess

        from tests.helpers import REPO

        credentials = [self.user, self.password] if self.user else []
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [SYSTEM_PYTHON, str(REPO / "tests" / "rtsp_server.py"), str(self.port), *credentials],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the RTSP server exited: {self.log_path.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(
            f"the RTSP server is not listening on {self.port}: {self.log_path.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


MODEL_IMGSZ = 64


def export_tiny_onnx(tiny_yolo: Path, workdir: Path) -> Path:
    """The tiny YOLO exported to ONNX by the same code an export job runs (model_64.onnx)."""
    from appliance.inference.onnx_export import export_onnx

    out = workdir / artifact_name("onnx", "fp32", MODEL_IMGSZ, False)
    export_onnx(tiny_yolo, out, MODEL_IMGSZ, False, workdir / "ultralytics-config")
    return out


def deploy_model(
    config: Config, db: Database, onnx: Path, tiny_pt: Path | None, name: str = "tiny", deploy: bool = True
) -> int:
    """A models row in the inference layout (models/<id>/best.pt, model_<imgsz>.onnx, metadata.json), deployed."""
    with write_transaction(db):
        model_id = db.execute(
            "INSERT INTO models (name, classes, imgsz, created_at) VALUES (?, ?, ?, ?)",
            [name, json.dumps(CLASSES), MODEL_IMGSZ, now_iso()],
        ).lastrowid
        assert model_id is not None
        folder = model_dir(config, model_id)
        folder.mkdir(parents=True, exist_ok=True)
        if tiny_pt is not None:
            shutil.copyfile(tiny_pt, folder / "best.pt")
        shutil.copyfile(onnx, folder / onnx.name)
        entry = {"format": "onnx", "precision": "fp32", "imgsz": MODEL_IMGSZ, "dynamic": False}
        fields = {"model_id": model_id, "name": name, "classes": CLASSES, "imgsz": MODEL_IMGSZ}
        update_model_metadata(config, model_id, fields, onnx.name, entry)
        db.execute("UPDATE models SET path = ? WHERE id = ?", [str(folder / "best.pt"), model_id])
        if deploy:
            db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1")
            db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    return model_id


def renamed_model(config: Config, db: Database, onnx: Path, name: str, classes: list[str]) -> int:
    """The same network as another models row, calling its classes by other names (a model that disagrees)."""
    model_id = deploy_model(config, db, onnx, None, name, deploy=False)
    with write_transaction(db):
        db.execute("UPDATE models SET classes = ? WHERE id = ?", [json.dumps(classes), model_id])
    update_model_metadata(config, model_id, {"classes": classes}, None, {})
    return model_id


# --- a colour detector with known answers (a real ONNX model through the real pipeline) -----------------

CELL = 32  # frame pixels per grid cell (8 px in the model's 64 px input)
FRAME = 256


def build_colour_onnx(path: Path, swap: bool = False) -> Path:
    """model_64.onnx in the YOLOv8 output layout (1, 4 + 2, 64 anchors): one anchor per 8 px cell of the
    input, "square" = share of red pixels in the cell, "disc" = share of blue ones.

    Hand-built so that end-to-end tests know the right answer for every frame: a red square or a blue disc
    filling one 32 px cell of a 256 px frame is found there with a score near 1, nothing else scores.
    `swap`: a wrong model of the same classes (red reported as "disc", blue as "square").
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    grid = MODEL_IMGSZ // 8
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    boxes = np.stack(
        [(xs.ravel() + 0.5) * 8, (ys.ravel() + 0.5) * 8, np.full(grid * grid, 8.0), np.full(grid * grid, 8.0)]
    ).astype(np.float32)[None]
    consts = {
        "four": np.array(4.0, np.float32),
        "one": np.array(1.0, np.float32),
        "zero": np.array(0.0, np.float32),
        "shape": np.array([1, 2, grid * grid], np.int64),
        "anchors": boxes,
    }
    nodes = [
        helper.make_node("Split", ["images"], ["r", "g", "b"], axis=1, num_outputs=3),
        helper.make_node("Sub", ["r", "b"], ["r_b"]),
        helper.make_node("Sub", ["b", "r"], ["b_r"]),
    ]
    for name, diff in (("red", "b_r"), ("blue", "r_b")) if swap else (("red", "r_b"), ("blue", "b_r")):
        nodes += [
            helper.make_node("Mul", [diff, "four"], [f"{name}4"]),
            helper.make_node("Sub", [f"{name}4", "one"], [f"{name}s"]),
            helper.make_node("Clip", [f"{name}s", "zero", "one"], [name]),
        ]
    nodes += [
        helper.make_node("Concat", ["red", "blue"], ["masks"], axis=1),
        helper.make_node("AveragePool", ["masks"], ["cells"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Reshape", ["cells", "shape"], ["scores"]),
        helper.make_node("Concat", ["anchors", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, MODEL_IMGSZ, MODEL_IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, grid * grid])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def scene(squares: list[tuple[int, int]], discs: list[tuple[int, int]], seed: int = 0) -> Any:
    """A 256 px frame with red squares and blue discs filling the given (column, row) cells of 32 px."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (FRAME, FRAME, 3), dtype=np.uint8)
    for col, row in squares:
        cv2.rectangle(
            image, (col * CELL, row * CELL), (col * CELL + CELL - 1, row * CELL + CELL - 1), COLOURS[0], -1
        )
    for col, row in discs:
        cv2.circle(image, (col * CELL + CELL // 2, row * CELL + CELL // 2), CELL // 2 - 1, COLOURS[1], -1)
    return image


def write_scenes(
    path: Path, segments: list[tuple[int, list[tuple[int, int]], list[tuple[int, int]]]], fps: float
) -> Path:
    """An MJPG .avi of (frames, squares, discs) segments, played in order (and looped by a file source)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME, FRAME))
    assert writer.isOpened()
    n = 0
    for frames, squares, discs in segments:
        for _ in range(frames):
            writer.write(scene(squares, discs, seed=n))
            n += 1
    writer.release()
    return path


__all__ = [
    "MjpegServer",
    "RtspServer",
    "rtsp_available",
    "build_colour_onnx",
    "deploy_model",
    "export_tiny_onnx",
    "renamed_model",
    "write_scenes",
    "write_video",
]
