"""Inference latency: our pipeline vs ultralytics' ONNX predictor vs bare session.run, at 320 and 640.

Same ONNX model and images for all three: (a) our pipeline end to end (letterbox -> ONNX Runtime -> decode +
NMS), (b) YOLO("model.onnx").predict, (c) session.run on a ready tensor (the floor). Where TensorRT and a GPU
are present the TensorRT backend is measured too. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3)}


def build_model(workdir: Path, weights: Path | None, classes: int) -> Path:
    """A yolov8n checkpoint: the given weights, or the architecture with batch-norm re-estimated on synthetic
    images so that it outputs boxes (a realistic post-processing load) without a training run."""
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(workdir / "ultralytics")
    if weights is not None:
        return weights
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from tests.models import enliven_detection_head

    torch.manual_seed(0)
    net = DetectionModel("yolov8n.yaml", nc=classes, verbose=False)
    net.names = {i: f"class{i}" for i in range(classes)}
    enliven_detection_head(net, class_bias=-2.5)
    out = workdir / "bench.pt"
    torch.save({"model": net, "train_args": {}, "date": None, "version": "bench"}, out)
    return out


def export(weights: Path, imgsz: int, workdir: Path) -> Path:
    from appliance.inference.onnx_export import export_onnx

    out = workdir / f"model_{imgsz}.onnx"
    export_onnx(weights, out, imgsz, False, workdir / "ultralytics")
    return out


def images(count: int, width: int, height: int) -> list[np.ndarray]:
    from tests.models import synthetic_image

    return [cv2.resize(synthetic_image(s, 96)[0], (width, height)) for s in range(count)]


def measure(
    onnx_path: Path, imgsz: int, frames: list[np.ndarray], iterations: int, warmup: int, conf: float
) -> dict[str, Any]:
    from ultralytics import YOLO

    from appliance.inference.pipeline import letterbox, load_detector

    detector = load_detector(onnx_path, imgsz=imgsz)
    ultra = YOLO(str(onnx_path), task="detect")
    session = detector.backend.session
    tensor = letterbox(frames[0], imgsz)[0]
    feed = {detector.backend.input_name: tensor}
    outputs = detector.backend.output_names[:1]

    def ours(frame: np.ndarray) -> float:
        start = time.perf_counter()
        result = detector.detect(frame, conf=conf, iou=0.45)
        total = (time.perf_counter() - start) * 1000
        for key, value in result.timings.items():
            stages.setdefault(key, []).append(value)
        counts.append(len(result.detections))
        return total

    def theirs(frame: np.ndarray) -> float:
        start = time.perf_counter()
        ultra.predict(frame, imgsz=imgsz, conf=conf, iou=0.45, verbose=False)
        return (time.perf_counter() - start) * 1000

    def floor(frame: np.ndarray) -> float:
        start = time.perf_counter()
        session.run(outputs, feed)
        return (time.perf_counter() - start) * 1000

    stages: dict[str, list[float]] = {}
    counts: list[int] = []
    results: dict[str, list[float]] = {"ours": [], "ultralytics": [], "session_run": []}
    runners = {"ours": ours, "ultralytics": theirs, "session_run": floor}
    for _ in range(warmup):
        for fn in runners.values():
            fn(frames[0])
    stages.clear()
    counts.clear()
    # Interleaved so that load from other processes hits the three alike, in a rotating order (ultralytics'
    # own ONNX session spins its threads after a run and would otherwise always slow the next one down),
    # with a short pause between calls for those threads to park.
    names = list(runners)
    for i in range(iterations):
        frame = frames[i % len(frames)]
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            time.sleep(0.02)
            results[name].append(runners[name](frame))
    a, b, c = (statistics.median(results[k]) for k in ("ours", "ultralytics", "session_run"))
    return {
        "ours_total": stats(results["ours"]),
        "ours_stages": {k.removesuffix("_ms"): stats(v) for k, v in stages.items()},
        "ultralytics_predict": stats(results["ultralytics"]),
        "session_run": stats(results["session_run"]),
        "ratio_ours_over_ultralytics": round(a / b, 3),
        "ratio_ours_over_session_run": round(a / c, 3),
        "detections_median": statistics.median(counts) if counts else 0,
    }


def measure_tensorrt(
    onnx_path: Path, imgsz: int, frames: list[np.ndarray], iterations: int, conf: float
) -> dict[str, Any]:
    from appliance.inference.pipeline import load_detector
    from appliance.inference.tensorrt_build import build_engine

    engine = onnx_path.with_name(f"model_{imgsz}_fp16.engine")
    info = build_engine(
        onnx_path, engine, precision="fp16", imgsz=imgsz, dynamic=False, calibration_images=[],
        calibration_cache=onnx_path.with_suffix(".cache"), progress=lambda p, s: None,
    )  # fmt: skip
    detector = load_detector(
        engine, imgsz=imgsz, options={"metadata": {**msgspec.to_builtins(info), "imgsz": imgsz}}
    )
    totals: list[float] = []
    for i in range(iterations + 3):
        start = time.perf_counter()
        detector.detect(frames[i % len(frames)], conf=conf)
        if i >= 3:
            totals.append((time.perf_counter() - start) * 1000)
    return {
        "tensorrt_fp16_total": stats(totals),
        "device": info.device,
        "tensorrt_version": info.tensorrt_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    parser.add_argument(
        "--weights", type=Path, default=None, help="a trained best.pt (default: yolov8n built here)"
    )
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--sizes", default="320,640")
    args = parser.parse_args()
    iterations, warmup = (8, 1) if args.quick else (100, 5)
    from appliance.inference.backends import default_threads, tensorrt_available

    report: dict[str, Any] = {
        "benchmark": "inference",
        "quick": args.quick,
        "iterations": iterations,
        "image_size": "200x150 and 1280x720",
        "ort_threads": default_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        workdir = Path(tmp)
        weights = build_model(workdir, args.weights, args.classes)
        frames = images(4, 200, 150) + images(4, 1280, 720)
        for imgsz in [int(s) for s in args.sizes.split(",")]:
            onnx_path = export(weights, imgsz, workdir)
            result = measure(onnx_path, imgsz, frames, iterations, warmup, args.conf)
            report[f"imgsz_{imgsz}"] = result
            if tensorrt_available():
                report[f"imgsz_{imgsz}"]["tensorrt"] = measure_tensorrt(
                    onnx_path, imgsz, frames, iterations, args.conf
                )
        if not tensorrt_available():
            report["tensorrt"] = (
                "skipped: TensorRT and pycuda are not installed (no NVIDIA GPU on this machine)"
            )
    report["targets"] = {"ours_over_ultralytics_max": 0.8, "ours_over_session_run_max": 1.15}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
