"""Live camera benchmark: delivered FPS and frame age at publish against a 30 fps loopback MJPEG source.

For each model size (ONNX yolov8n at 320 and 640 px, random weights: the speed is the architecture's),
the same run measures the model alone (Detector.detect on a camera-sized frame, back to back) and the
whole camera loop (capture thread -> newest frame -> inference -> rules -> JPEG encode -> atomic publish)
with the CameraProcess the `appliance camera` process runs (one camera, continuous mode, no rules). Targets: delivered FPS >= 90 % of the model-only
FPS when the model is the bottleneck, median frame age < 1.5 model-times. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from appliance.caller import CurrentUser  # noqa: E402
from appliance.camera.runner import CameraProcess  # noqa: E402
from appliance.clock import now_iso  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database, write_transaction  # noqa: E402
from appliance.models.artifacts import artifact_name, model_dir, update_model_metadata  # noqa: E402
from appliance.stations.cameras import create_camera  # noqa: E402
from appliance.stations.schemas import CameraSettings, CameraWrite  # noqa: E402
from tests.models import synthetic_image  # noqa: E402

FRAME_W, FRAME_H = 640, 480
SOURCE_FPS = 30.0

MAKE_WEIGHTS = """
import sys
from appliance.inference.ultralytics_env import prepare_ultralytics_env
prepare_ultralytics_env(__import__("pathlib").Path(sys.argv[2]))
from ultralytics import YOLO
YOLO("yolov8n.yaml").save(sys.argv[1])
"""


def make_onnx(workdir: Path, imgsz: int) -> Path:
    """yolov8n (random weights) -> model_<imgsz>.onnx with the export job's own code, in child processes.

    Kept in a cache folder between runs: exporting is not what this benchmark measures.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    weights = workdir / "yolov8n.pt"
    # In a folder of its own: files cached before exports had a batch axis cannot run batches.
    out = workdir / "batch-axis" / artifact_name("onnx", "fp32", imgsz, False)
    out.parent.mkdir(exist_ok=True)
    if out.exists():
        return out
    if not weights.exists():
        subprocess.run(
            [sys.executable, "-c", MAKE_WEIGHTS, str(weights), str(workdir / "ucfg")], check=True, cwd=REPO
        )
    subprocess.run(
        [sys.executable, "-m", "appliance.inference.onnx_export", "--weights", str(weights), "--out", str(out),
         "--imgsz", str(imgsz), "--config-dir", str(workdir / "ucfg")],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return out


SERVE_SOURCE = """
import sys, time
from bench.camera import camera_frames
from tests.camera_sources import MjpegServer
server = MjpegServer(fps=float(sys.argv[1]), frames=camera_frames(30)).start()
print(server.port, flush=True)
sys.stdin.read()
"""


class SourceProcess:
    """The loopback camera in its own process, as a real camera is: it takes no CPU time from this one's GIL."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_SOURCE, str(SOURCE_FPS)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/stream.mjpg"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def camera_frames(count: int) -> list[bytes]:
    frames = []
    for i in range(count):
        image, _ = synthetic_image(300 + i, 96)
        image = cv2.resize(image, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        frames.append(encoded.tobytes())
    return frames


class ModelAlone:
    """The camera's own loaded model, called back to back on a camera frame while the loop is held."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.image = cv2.imdecode(np.frombuffer(camera_frames(1)[0], np.uint8), cv2.IMREAD_COLOR)
        for _ in range(3):
            self.detector.detect(self.image)
        self.times: list[float] = []
        self.busy_s = 0.0

    def burst(self, seconds: float) -> None:
        started = time.perf_counter()
        count = 0
        while time.perf_counter() - started < seconds or count < 2:
            t0 = time.perf_counter()
            self.detector.detect(self.image)
            self.times.append((time.perf_counter() - t0) * 1000)
            count += 1
        self.busy_s += time.perf_counter() - started

    def figures(self) -> dict[str, float]:
        # FPS as calls over elapsed time (a mean rate, like delivered FPS), the time per call as a median.
        return {"model_fps": len(self.times) / self.busy_s, "model_ms": statistics.median(self.times)}


def register_model(config: Any, onnx: Path, imgsz: int) -> int:
    """A deployed models row for an exported file (80 COCO-sized classes), in the inference layout."""
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    with write_transaction(db):
        model_id = db.execute(
            "INSERT INTO models (name, classes, imgsz, created_at) VALUES (?, ?, ?, ?)",
            [f"bench-{imgsz}", json.dumps([f"c{i}" for i in range(80)]), imgsz, now_iso()],
        ).lastrowid
        assert model_id is not None
        folder = model_dir(config, model_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / onnx.name).write_bytes(onnx.read_bytes())
        update_model_metadata(
            config, model_id, {"model_id": model_id, "imgsz": imgsz}, onnx.name,
            {"format": "onnx", "precision": "fp32", "imgsz": imgsz, "dynamic": False},
        )  # fmt: skip
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1")
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    db.conn.close()
    return model_id


def deploy(config: Any, onnx: Path, imgsz: int, source: SourceProcess) -> int:
    model_id = register_model(config, onnx, imgsz)
    db = open_database(config.db_path)
    add_camera(db, "bench", CameraSettings(source_type="url", source=source.url))
    db.conn.close()
    return model_id


BENCH_ADMIN = CurrentUser(id=0, username="bench", role="admin", token_id="bench")


def add_camera(db: Any, name: str, settings: CameraSettings) -> int:
    return create_camera(db, CameraWrite(name=name, settings=settings, enabled=True), BENCH_ADMIN).id


def measure(
    data_dir: Path, onnx: Path, imgsz: int, source: SourceProcess, live_s: float, model_s: float, rounds: int
) -> dict[str, Any]:
    """Rounds of (model alone, then the live camera loop) in turn, so both see the same machine load.

    While the model runs alone the camera loop is held between two frames and its capture thread only
    grabs (no decoding), so the baseline gets the CPU the loop would otherwise use.
    """
    config = load_config(env={}, data_dir=str(data_dir))
    model_id = deploy(config, onnx, imgsz, source)
    process = CameraProcess(config)
    thread = threading.Thread(target=process.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not process.loops:
        if time.monotonic() > deadline:
            raise RuntimeError("the camera process never started the camera")
        time.sleep(0.05)
    loop = next(iter(process.loops.values()))
    published: list[tuple[float, Any]] = []
    original_publish = loop.publisher.publish_frame
    original_latest = loop.source.latest
    gate, held = threading.Event(), threading.Event()
    gate.set()

    def record(jpeg: bytes, meta: Any) -> None:
        original_publish(jpeg, meta)
        published.append((time.monotonic(), meta))

    def gated_latest(after_seq: int, timeout: float) -> Any:
        if not gate.is_set():  # held between two frames, like the baseline's model calls
            held.set()
            gate.wait()
            held.clear()
        return original_latest(after_seq, timeout)

    loop.publisher.publish_frame = record  # type: ignore[method-assign]
    loop.source.latest = gated_latest  # type: ignore[method-assign]
    while not (published and published[-1][1].model_id == model_id):  # model loaded, frames flowing
        if time.monotonic() > deadline:
            raise RuntimeError("the camera never published a frame with the model")
        time.sleep(0.05)
    time.sleep(1.0)  # warm-up
    # One model, one ONNX Runtime session and thread pool, used in turn by the loop and by the baseline.
    gate.clear()
    held.wait(30)
    alone = ModelAlone(next(iter(process.models.loaded.values())).detector)
    gate.set()
    windows: list[tuple[float, float]] = []
    dropped = 0
    for _ in range(rounds):
        gate.clear()
        held.wait(30)
        loop.source._decode_after = float("inf")  # grab only while held
        alone.burst(model_s / rounds)
        loop.source._decode_after = 0.0
        dropped_before = loop.source.dropped
        gate.set()
        time.sleep(max(0.5, alone.figures()["model_ms"] / 1000))  # the first frame after the hold is stale
        start = time.monotonic()
        time.sleep(live_s / rounds)
        windows.append((start, time.monotonic()))
        dropped += loop.source.dropped - dropped_before
    process.stop.set()
    thread.join(15)
    window = [meta.timings for t, meta in published if any(a <= t < b for a, b in windows)]
    seconds = sum(b - a for a, b in windows)
    ages = sorted(m["frame_age"] for m in window)
    detect = [sum(m.get(k, 0.0) for k in ("preprocess", "inference", "postprocess")) for m in window]
    return {
        **alone.figures(),
        "delivered_fps": len(window) / seconds,
        "frame_age_median_ms": statistics.median(ages),
        "frame_age_p99_ms": ages[min(len(ages) - 1, int(len(ages) * 0.99))],
        "detect_median_ms": statistics.median(detect),
        "detect_mean_ms": statistics.fmean(detect),
        "wait_mean_ms": statistics.fmean(m["wait"] for m in window),
        "encode_median_ms": statistics.median(m["encode"] for m in window),
        "dropped": dropped,
        "frames": len(window),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute in all)")
    parser.add_argument("--sizes", default="320,640")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "appliance-bench-camera",
        help="folder for the exported models, reused between runs",
    )  # fmt: skip
    args = parser.parse_args()
    seconds = 6.0 if args.quick else 24.0  # live camera loop, per model size
    model_seconds = 3.0 if args.quick else 12.0  # model alone, per model size
    rounds = 3 if args.quick else 6
    results: dict[str, Any] = {"source_fps": SOURCE_FPS, "frame_w": FRAME_W, "frame_h": FRAME_H}
    source = SourceProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
            work = Path(tmp)
            for imgsz in [int(s) for s in args.sizes.split(",")]:
                onnx = make_onnx(args.cache, imgsz)
                m = measure(work / f"data-{imgsz}", onnx, imgsz, source, seconds, model_seconds, rounds)
                model_bound = m["model_fps"] < SOURCE_FPS
                # When the source is the bottleneck the pipeline can deliver at most the source's rate.
                ceiling = min(m["model_fps"], SOURCE_FPS)
                row = {
                    "model_only_fps": round(m["model_fps"], 2),
                    "model_ms": round(m["model_ms"], 2),
                    "delivered_fps": round(m["delivered_fps"], 2),
                    "delivered_ratio": round(m["delivered_fps"] / ceiling, 3),
                    "frame_age_median_ms": round(m["frame_age_median_ms"], 2),
                    "frame_age_p99_ms": round(m["frame_age_p99_ms"], 2),
                    "frame_age_model_times": round(m["frame_age_median_ms"] / m["model_ms"], 3),
                    "detect_in_loop_median_ms": round(m["detect_median_ms"], 2),
                    # Share of the loop's time in Detector.detect (pre + inference + post): 1.0 = no loop overhead.
                    "loop_busy_in_model": round(m["delivered_fps"] * m["detect_mean_ms"] / 1000, 3),
                    "encode_median_ms": round(m["encode_median_ms"], 2),
                    "wait_for_frame_mean_ms": round(m["wait_mean_ms"], 2),
                    "dropped_frames": m["dropped"],
                    "frames": m["frames"],
                    "model_bound": model_bound,
                    "fps_target_met": m["delivered_fps"] >= 0.9 * ceiling,
                    "age_target_met": m["frame_age_median_ms"] < 1.5 * m["model_ms"],
                }
                print(f"imgsz {imgsz}: {json.dumps(row)}", file=sys.stderr)
                for key, value in row.items():
                    results[f"{key}_{imgsz}"] = value
    finally:
        source.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
