"""The accuracy gate of reduced precisions: a candidate (INT8, BF16, FP16) is measured on this box against its
baseline on the model's frozen validation split, and offered only when it keeps the accuracy and is faster.

- Accuracy: mAP50-95 of both on the validation images of the model's training snapshot
  (`runs/<job>/images/val`, labels in `runs/<job>/labels/val`), through our own pipeline (EXIF-aware decode,
  letterbox, decode + NMS at ultralytics' validation settings) and `detection_metrics.mean_average_precision`.
- Speed: the median of single-frame calls of both, interleaved on one validation image, on this box.
- Decision (`decide`): mAP50-95 drops by at most `precision_max_map_drop` points AND the candidate is at least
  `precision_min_speedup` times faster; the reason states the numbers either way.

An empty split or one without a single labeled box cannot show accuracy: the candidate is refused. This
module is engine-agnostic: the OpenVINO child (precision_child.py) and the TensorRT export job call `run_gate`
with their two Detectors.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.clock import now_iso
from appliance.models.contracts import PrecisionGate
from appliance.models.detection_metrics import (
    VAL_CONF,
    VAL_IOU,
    VAL_MAX_DET,
    ImageResult,
    MapResult,
    mean_average_precision,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPEED_ROUNDS = 30
SPEED_WARMUP = 3


@dataclass(frozen=True)
class LabeledImage:
    image: Path
    labels: Path | None  # YOLO label file (class cx cy w h, normalised); None: no boxes (a background image)


def snapshot_split(run_dir: Path, split: str) -> list[LabeledImage]:
    """The images of one split of a training snapshot with their label files, in name order."""
    folder = run_dir / "images" / split
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            label = run_dir / "labels" / split / f"{path.stem}.txt"
            found.append(LabeledImage(path, label if label.is_file() else None))
    return found


def read_labels(path: Path | None, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy in pixels, class ids) of a YOLO label file for an image of width x height."""
    rows = []
    if path is not None:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5:
                rows.append([float(v) for v in parts[:5]])
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    data = np.asarray(rows, np.float64)
    cx, cy, w, h = data[:, 1] * width, data[:, 2] * height, data[:, 3] * width, data[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, data[:, 0].astype(np.int64)


def read_image(path: Path) -> np.ndarray | None:
    """BGR pixels with the EXIF orientation applied (IMREAD_COLOR does), as the labels were drawn."""
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def evaluate(detector: Any, images: list[LabeledImage]) -> MapResult:
    """mAP of a Detector over labeled images, with ultralytics' validation thresholds."""
    results = []
    for item in images:
        image = read_image(item.image)
        if image is None:
            logger.warning("validation image %s cannot be read; left out", item.image)
            continue
        height, width = image.shape[:2]
        label_boxes, label_classes = read_labels(item.labels, width, height)
        found = detector.detect(image, conf=VAL_CONF, iou=VAL_IOU, max_det=VAL_MAX_DET).detections
        results.append(
            ImageResult(
                boxes=np.asarray([[d.x1, d.y1, d.x2, d.y2] for d in found], np.float32).reshape(-1, 4),
                scores=np.asarray([d.confidence for d in found], np.float64),
                classes=np.asarray([d.class_id for d in found], np.int64),
                label_boxes=label_boxes,
                label_classes=label_classes,
            )
        )
    return mean_average_precision(results)


def measure_speeds(
    detectors: dict[str, Any], image: np.ndarray, rounds: int = SPEED_ROUNDS
) -> dict[str, float]:
    """Median milliseconds of one detect() per detector, interleaved so that load hits them alike."""
    for detector in detectors.values():
        for _ in range(SPEED_WARMUP):
            detector.detect(image)
    times: dict[str, list[float]] = {name: [] for name in detectors}
    names = list(detectors)
    for i in range(rounds):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            started = time.perf_counter()
            detectors[name].detect(image)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def decide(
    *,
    precision: str,
    baseline_precision: str,
    baseline_map: float,
    candidate_map: float,
    baseline_ms: float,
    candidate_ms: float,
    max_drop_points: float,
    min_speedup: float,
    labels: int,
) -> tuple[bool, str]:
    """(accepted, reason with the numbers)."""
    cand, base = precision.upper(), baseline_precision.upper()
    if labels == 0:
        return False, (
            f"the validation split has no labeled box: {cand}'s accuracy cannot be measured, so it is not offered"
        )
    drop = (baseline_map - candidate_map) * 100
    speedup = baseline_ms / candidate_ms if candidate_ms > 0 else 0.0
    accurate = drop <= max_drop_points
    faster = speedup >= min_speedup
    accuracy = (
        f"mAP50-95 {candidate_map:.3f} against {baseline_map:.3f} for {base}: "
        f"{'a drop of' if drop > 0 else 'a gain of'} {abs(drop):.2f} points (at most {max_drop_points:g} allowed)"
    )
    speed = (
        f"{candidate_ms:.1f} ms against {baseline_ms:.1f} ms per frame here: {speedup:.2f}x "
        f"(at least {min_speedup:g}x needed)"
    )
    if accurate and faster:
        return True, f"{cand} accepted: {accuracy}; {speed}"
    why = []
    if not accurate:
        why.append(f"it loses too much accuracy, {accuracy}")
    if not faster:
        why.append(f"it is not faster, {speed}")
    return False, f"{cand} refused: " + "; and ".join(why)


def run_gate(
    *,
    baseline: Any,
    candidate: Any,
    images: list[LabeledImage],
    engine: str,
    device: str,
    precision: str,
    baseline_precision: str,
    max_drop_points: float,
    min_speedup: float,
    calibration_images: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> PrecisionGate:
    """Evaluate both Detectors on the split, time them, decide."""
    say = progress or (lambda percent, stage: None)
    say(0, f"evaluating {baseline_precision.upper()} on {len(images)} validation images")
    base = evaluate(baseline, images)
    say(40, f"evaluating {precision.upper()}")
    cand = evaluate(candidate, images)
    say(80, "timing both")
    speeds: dict[str, float] = {"baseline": 0.0, "candidate": 0.0}
    sample = next((img for img in (read_image(i.image) for i in images) if img is not None), None)
    if sample is not None:
        speeds = measure_speeds({"baseline": baseline, "candidate": candidate}, sample)
    accepted, reason = decide(
        precision=precision,
        baseline_precision=baseline_precision,
        baseline_map=base.map50_95,
        candidate_map=cand.map50_95,
        baseline_ms=speeds["baseline"],
        candidate_ms=speeds["candidate"],
        max_drop_points=max_drop_points,
        min_speedup=min_speedup,
        labels=base.labels,
    )
    logger.info("accuracy gate: %s", reason)
    say(100, "decided")
    return PrecisionGate(
        engine=engine,
        device=device,
        precision=precision,
        baseline_precision=baseline_precision,
        val_images=base.images,
        val_labels=base.labels,
        baseline_map50_95=round(base.map50_95, 5),
        candidate_map50_95=round(cand.map50_95, 5),
        map_drop_points=round((base.map50_95 - cand.map50_95) * 100, 3),
        baseline_ms=round(speeds["baseline"], 3),
        candidate_ms=round(speeds["candidate"], 3),
        speedup=round(speeds["baseline"] / speeds["candidate"], 3) if speeds["candidate"] > 0 else 0.0,
        max_drop_points=max_drop_points,
        min_speedup=min_speedup,
        accepted=accepted,
        reason=reason,
        calibration_images=calibration_images,
        evaluated_at=now_iso(),
    )
