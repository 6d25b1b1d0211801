"""Inference latency at 320 and 640: our pipeline on ONNX Runtime and on OpenVINO against ultralytics' own
predictors and against the bare engine calls, same model, same images, one run.

Rows per size (in blocks of calls, the runners' order rotating from round to round, so that load from other
processes hits them alike; each ratio is the median over the rounds of the two runners' block medians):
- `ours_ort`: our pipeline end to end (letterbox -> ONNX Runtime -> decode + NMS);
- `ultralytics_onnx`: `YOLO("model.onnx").predict` on the same file (rect=False: it letterboxes to the square
  the file has);
- `bare_ort_ours`: `session.run` on a ready tensor, on a session of its own built with exactly our backend's
  options (`backends.session_options`: no thread spinning) - the floor under `ours_ort`;
- `bare_ort_ultralytics`: the same call on a session with ultralytics' options (ONNX Runtime's defaults:
  threads spin between ops), to see what makes its session faster or slower;
- `ours_ov_fp32` / `bare_ov_fp32`: our pipeline on OpenVINO at FP32 (what the box runs until the accuracy gate
  accepted a reduced precision) and the bare compiled-model call with the same properties, on a ready float
  tensor read in place (`share_inputs`: no copy into the request). Ours hands the compiled model the letterbox
  canvas as bytes and the conversion runs in its graph (openvino_backend.with_byte_input);
- `ours_ov` / `bare_ov`: the same at OpenVINO's native precision for this CPU (bfloat16 on AVX512-BF16/AMX
  CPUs like the development VM, what ultralytics' OpenVINO predictor runs unasked; FP32 elsewhere);
- `ultralytics_openvino`: ultralytics' own OpenVINO export (`YOLO(pt).export(format="openvino")`, offline,
  its telemetry declined by openvino_env) and predict.

Each runner has OpenCV's thread count of its own process: ultralytics' predictors run with OpenCV serial (as
importing ultralytics sets it), ours with OpenCV's default (the camera process never imports ultralytics).

Where TensorRT and a GPU are present the TensorRT backend is measured too. Prints one JSON object on the
last line, with `ov_vs_ultralytics_onnx_<size>`, `ov_vs_bare_<size>`, `ov_vs_ultralytics_openvino_640` (and
the same for FP32 as `ov_fp32_...`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402

# OpenCV's own thread count, as the camera and web processes have it. Importing ultralytics sets it to serial
# for the whole process (cv2.setNumThreads(0) in ultralytics.utils); each runner gets what its own process has.
CV2_THREADS = cv2.getNumThreads()


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


def export_ultralytics_openvino(weights: Path, imgsz: int, workdir: Path) -> Path | str:
    """Ultralytics' own OpenVINO export of the same weights (its folder), or why it could not be made."""
    from appliance.inference.openvino_env import openvino_offline_env

    openvino_offline_env(workdir / "openvino-home")  # convert_model would post usage statistics otherwise
    from ultralytics import YOLO

    local = workdir / f"ultra_{imgsz}" / weights.name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(weights.read_bytes())
    try:
        made = YOLO(str(local)).export(
            format="openvino", imgsz=imgsz, half=False, dynamic=False, batch=1, device="cpu", verbose=False
        )
    except Exception as exc:  # noqa: BLE001 - reported, the other rows still run
        return f"ultralytics' OpenVINO export failed: {exc}"
    return Path(made)


def images(count: int, width: int, height: int) -> list[np.ndarray]:
    from tests.models import synthetic_image

    return [cv2.resize(synthetic_image(s, 96)[0], (width, height)) for s in range(count)]


def measure(
    weights: Path,
    onnx_path: Path,
    imgsz: int,
    frames: list[np.ndarray],
    iterations: int,
    warmup: int,
    conf: float,
    workdir: Path,
) -> dict[str, Any]:
    import onnxruntime as ort
    import openvino as ov
    from ultralytics import YOLO

    from appliance.inference.backends import session_options
    from appliance.inference.openvino_backend import compile_config, native_precision
    from appliance.inference.pipeline import letterbox, load_detector

    native = native_precision("CPU")
    ours_ort = load_detector(onnx_path, backend="onnxruntime", imgsz=imgsz)
    ours_ov_fp32 = load_detector(onnx_path, backend="openvino", imgsz=imgsz, options={"precision": "fp32"})
    ours_ov = load_detector(onnx_path, backend="openvino", imgsz=imgsz, options={"precision": native})
    ultra = YOLO(str(onnx_path), task="detect")
    tensor = letterbox(frames[0], imgsz)[0]
    name = ours_ort.backend.input_name
    bare_ours = ort.InferenceSession(
        str(onnx_path), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )
    bare_ultra = ort.InferenceSession(
        str(onnx_path), providers=["CPUExecutionProvider"]
    )  # ultralytics' options
    core = ov.Core()

    def bare_openvino(precision: str) -> Any:
        model = core.read_model(str(onnx_path))
        model.reshape({0: ov.PartialShape([1, 3, imgsz, imgsz])})
        return core.compile_model(model, "CPU", compile_config("CPU", precision)).create_infer_request()

    bare_ov_fp32, bare_ov = bare_openvino("fp32"), bare_openvino(native)
    ultra_ov_dir = export_ultralytics_openvino(weights, imgsz, workdir) if imgsz == 640 else None
    ultra_ov = YOLO(str(ultra_ov_dir), task="detect") if isinstance(ultra_ov_dir, Path) else None

    stages: dict[str, dict[str, list[float]]] = {}
    counts: dict[str, list[int]] = {}

    def pipeline(label: str, detector: Any) -> Callable[[np.ndarray], float]:
        def run(frame: np.ndarray) -> float:
            start = time.perf_counter()
            result = detector.detect(frame, conf=conf, iou=0.45)
            total = (time.perf_counter() - start) * 1000
            for key, value in result.timings.items():
                stages.setdefault(label, {}).setdefault(key, []).append(value)
            counts.setdefault(label, []).append(len(result.detections))
            return total

        return run

    def timed(call: Callable[[], Any]) -> Callable[[np.ndarray], float]:
        def run(frame: np.ndarray) -> float:
            start = time.perf_counter()
            call()
            return (time.perf_counter() - start) * 1000

        return run

    def predict(model: Any) -> Callable[[np.ndarray], float]:
        def run(frame: np.ndarray) -> float:
            start = time.perf_counter()
            model.predict(frame, imgsz=imgsz, conf=conf, iou=0.45, rect=False, verbose=False)
            return (time.perf_counter() - start) * 1000

        return run

    runners: dict[str, Callable[[np.ndarray], float]] = {
        "ours_ort": pipeline("ours_ort", ours_ort),
        "ultralytics_onnx": predict(ultra),
        "bare_ort_ours": timed(lambda: bare_ours.run(None, {name: tensor})),
        "bare_ort_ultralytics": timed(lambda: bare_ultra.run(None, {name: tensor})),
        "ours_ov_fp32": pipeline("ours_ov_fp32", ours_ov_fp32),
        "bare_ov_fp32": timed(lambda: bare_ov_fp32.infer({0: tensor}, share_inputs=True)),
        "ours_ov": pipeline("ours_ov", ours_ov),
        "bare_ov": timed(lambda: bare_ov.infer({0: tensor}, share_inputs=True)),
    }
    if ultra_ov is not None:
        runners["ultralytics_openvino"] = predict(ultra_ov)

    def threads_for(key: str) -> None:
        cv2.setNumThreads(0 if key.startswith("ultralytics") else CV2_THREADS)

    for _ in range(warmup):
        for key, fn in runners.items():
            threads_for(key)
            fn(frames[0])
    stages.clear()
    counts.clear()
    # In blocks, as a camera loop calls one model again and again: each runner takes a block of calls in turn,
    # the order rotating from round to round so that load from other processes hits every runner alike, with
    # a pause before each block for the threads the previous runner left spinning (torch's OpenMP threads in
    # ultralytics' predictor spin for up to 200 ms) to park. Calls interleaved one by one measured mostly
    # which runner came after ultralytics.
    # A ratio is the median over rounds of the two runners' block medians in the same round (a paired
    # comparison: the VM's load drifts from minute to minute, and pooled medians of a 7 ms call swung by 0.1).
    results: dict[str, list[float]] = {key: [] for key in runners}
    by_round: dict[str, list[float]] = {key: [] for key in runners}
    names = list(runners)
    rounds = 8
    per_block = max(1, iterations // rounds)
    for round_no in range(rounds):
        for k in range(len(names)):
            key = names[(round_no + k) % len(names)]
            threads_for(key)
            time.sleep(0.3)
            block = [runners[key](frames[(round_no * per_block + i) % len(frames)]) for i in range(per_block)]
            results[key] += block
            by_round[key].append(statistics.median(block))

    def ratio(a: str, b: str) -> float | None:
        if a not in by_round or b not in by_round:
            return None
        return round(statistics.median(x / y for x, y in zip(by_round[a], by_round[b], strict=True)), 3)

    report: dict[str, Any] = {key: stats(values) for key, values in results.items()}
    report["stages"] = {
        label: {k.removesuffix("_ms"): stats(v) for k, v in by_stage.items() if k != "batch"}
        for label, by_stage in stages.items()
    }
    report["detections_median"] = {label: statistics.median(c) for label, c in counts.items()}
    report["ov_precision"] = native
    report["ratios"] = {
        "ours_ort_over_ultralytics_onnx": ratio("ours_ort", "ultralytics_onnx"),
        "ours_ort_over_bare_ort_ours": ratio("ours_ort", "bare_ort_ours"),
        "bare_ort_ultralytics_over_bare_ort_ours": ratio("bare_ort_ultralytics", "bare_ort_ours"),
        "ov_over_ultralytics_onnx": ratio("ours_ov", "ultralytics_onnx"),
        "ov_over_bare_ov": ratio("ours_ov", "bare_ov"),
        "ov_fp32_over_ultralytics_onnx": ratio("ours_ov_fp32", "ultralytics_onnx"),
        "ov_fp32_over_bare_ov_fp32": ratio("ours_ov_fp32", "bare_ov_fp32"),
        "ov_over_ultralytics_openvino": ratio("ours_ov", "ultralytics_openvino"),
        "ov_fp32_over_ultralytics_openvino": ratio("ours_ov_fp32", "ultralytics_openvino"),
    }
    if isinstance(ultra_ov_dir, str):
        report["ultralytics_openvino"] = ultra_ov_dir
    return report


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
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a few minutes)")
    parser.add_argument(
        "--weights", type=Path, default=None, help="a trained best.pt (default: yolov8n built here)"
    )
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--sizes", default="320,640")
    args = parser.parse_args()
    iterations, warmup = (48, 3) if args.quick else (160, 5)
    from appliance.inference.backends import default_threads, tensorrt_available
    from appliance.inference.openvino_backend import openvino_version

    report: dict[str, Any] = {
        "benchmark": "inference",
        "quick": args.quick,
        "iterations": iterations,
        "image_size": "200x150 and 1280x720",
        "ort_threads": default_threads(),
        "openvino": openvino_version(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        workdir = Path(tmp)
        weights = build_model(workdir, args.weights, args.classes)
        frames = images(4, 200, 150) + images(4, 1280, 720)
        for imgsz in [int(s) for s in args.sizes.split(",")]:
            onnx_path = export(weights, imgsz, workdir)
            result = measure(weights, onnx_path, imgsz, frames, iterations, warmup, args.conf, workdir)
            report[f"imgsz_{imgsz}"] = result
            print(f"{imgsz}: {json.dumps(result)}", file=sys.stderr)
            ratios = result["ratios"]
            report[f"ov_vs_ultralytics_onnx_{imgsz}"] = ratios["ov_over_ultralytics_onnx"]
            report[f"ov_vs_bare_{imgsz}"] = ratios["ov_over_bare_ov"]
            report[f"ov_fp32_vs_ultralytics_onnx_{imgsz}"] = ratios["ov_fp32_over_ultralytics_onnx"]
            report[f"ov_fp32_vs_bare_{imgsz}"] = ratios["ov_fp32_over_bare_ov_fp32"]
            report[f"ours_vs_ultralytics_onnx_{imgsz}"] = ratios["ours_ort_over_ultralytics_onnx"]
            report[f"ours_vs_bare_{imgsz}"] = ratios["ours_ort_over_bare_ort_ours"]
            if imgsz == 640:
                report["ov_vs_ultralytics_openvino_640"] = ratios["ov_over_ultralytics_openvino"]
                report["ov_fp32_vs_ultralytics_openvino_640"] = ratios["ov_fp32_over_ultralytics_openvino"]
            if tensorrt_available():
                report[f"imgsz_{imgsz}"]["tensorrt"] = measure_tensorrt(
                    onnx_path, imgsz, frames, iterations, args.conf
                )
        if not tensorrt_available():
            report["tensorrt"] = (
                "skipped: TensorRT and pycuda are not installed (no NVIDIA GPU on this machine)"
            )
    report["ov_precision"] = report.get("imgsz_320", report.get("imgsz_640", {})).get("ov_precision")
    report["targets"] = {
        "ov_vs_ultralytics_onnx_max": 0.6,
        "ov_vs_bare_max": 1.05,
        "ov_vs_ultralytics_openvino_640_max": 1.0,
        "ours_vs_ultralytics_onnx_max": 1.0,
        "ours_vs_bare_max": 1.15,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
