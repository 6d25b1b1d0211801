"""The accuracy gate of reduced precisions: a candidate (INT8, BF16, FP16) is measured on this box against its
baseline on the model's frozen validation split, and offered only when it keeps the accuracy and is faster.

- Accuracy: mAP50-95 of both on the val split of the model's training run, frozen by the evaluation domain
  (`appliance.evaluation.splits.training_split_items`: the snapshot's images by content, its boxes by value),
  measured by `appliance.evaluation.run.evaluate_detector`, the box's one implementation of Ultralytics' val
  (every class above 0.001, NMS at IoU 0.7, the same matching and 101-point AP).
- Speed: the median of single-frame calls of both, interleaved on one validation image, on this box.
- Decision (`decide`): mAP50-95 drops by at most `precision_max_map_drop` points AND the candidate is at least
  `precision_min_speedup` times faster; the reason states the numbers either way.

A split without a single labeled box cannot show accuracy: the candidate is refused. This module is
engine-agnostic: the OpenVINO child (precision_child.py) and the TensorRT export job call `run_gate` with
their two Detectors.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from appliance.clock import now_iso
from appliance.evaluation.contracts import SplitItem
from appliance.evaluation.run import evaluate_detector
from appliance.models.contracts import PrecisionGate

logger = logging.getLogger(__name__)

SPEED_ROUNDS = 30
SPEED_WARMUP = 3


def first_image(items: Sequence[SplitItem]) -> np.ndarray | None:
    """The first readable image of the split (EXIF orientation applied, as the pipeline decodes)."""
    for item in items:
        image = cv2.imread(item.path, cv2.IMREAD_COLOR)
        if image is not None:
            return image
    return None


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
    items: Sequence[SplitItem],
    split_classes: Sequence[str],
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
    say(0, f"evaluating {baseline_precision.upper()} on {len(items)} validation images")
    base, _ = evaluate_detector(baseline, items, split_classes)
    say(40, f"evaluating {precision.upper()}")
    cand, _ = evaluate_detector(candidate, items, split_classes)
    say(80, "timing both")
    speeds: dict[str, float] = {"baseline": 0.0, "candidate": 0.0}
    sample = first_image(items)
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
        val_images=base.images_evaluated,
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
