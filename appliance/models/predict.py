"""Predictions for people: `/inference` on an uploaded image and box suggestions on a stored one."""

from __future__ import annotations

import time
from pathlib import Path

from appliance.caller import CurrentUser
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Invalid
from appliance.imaging.check import check_image_bytes, decode_image
from appliance.inference.pipeline import Detections
from appliance.models.loading import cached_detector
from appliance.models.registry import readable_model, visible_deployed_model
from appliance.models.schemas import Box, DetectionRead, InferenceRead, SuggestionsRead


def _detections_read(result: Detections) -> list[DetectionRead]:
    return [
        DetectionRead(
            class_id=d.class_id,
            class_name=d.class_name,
            confidence=round(d.confidence, 6),
            box=Box(x1=round(d.x1, 2), y1=round(d.y1, 2), x2=round(d.x2, 2), y2=round(d.y2, 2)),
        )
        for d in result.detections
    ]


def _check_thresholds(confidence: float, iou: float, max_det: int) -> None:
    if not 0.0 <= confidence <= 1.0:
        raise Invalid(f"confidence must be between 0 and 1, got {confidence}")
    if not 0.0 <= iou <= 1.0:
        raise Invalid(f"iou must be between 0 and 1, got {iou}")
    if not 1 <= max_det <= 3000:
        raise Invalid(f"max_det must be between 1 and 3000, got {max_det}")


def run_inference(
    db: Database,
    config: Config,
    user: CurrentUser,
    data: bytes,
    *,
    model_id: int | None = None,
    confidence: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    precision: str | None = None,
) -> InferenceRead:
    _check_thresholds(confidence, iou, max_det)
    if model_id is None:
        row = visible_deployed_model(db, user, "no model is deployed; deploy one or pass model_id")
    else:
        row = readable_model(db, model_id, user)
    if not data:
        raise Invalid("the image file is empty")
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    started = time.perf_counter()
    image = decode_image(data, checked)
    decode_ms = (time.perf_counter() - started) * 1000
    detector, chosen_precision = cached_detector(config, row, precision)
    result = detector.detect(image, conf=confidence, iou=iou, max_det=max_det)
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    timings["decode_ms"] = round(decode_ms, 3)
    timings["total_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return InferenceRead(
        model_id=row["id"],
        backend=detector.key,
        precision=chosen_precision,
        device=detector.device,
        width=result.width,
        height=result.height,
        detections=_detections_read(result),
        timings=timings,
    )


def suggest_boxes(
    db: Database,
    config: Config,
    user: CurrentUser,
    image_path: Path,
    image_id: int,
    dataset_classes: list[str],
    *,
    confidence: float = 0.25,
    iou: float = 0.45,
) -> SuggestionsRead:
    """Run the deployed model on a stored image; class ids are mapped to the dataset's classes by name."""
    _check_thresholds(confidence, iou, 300)
    row = visible_deployed_model(db, user, "no model is deployed; deploy a model to get suggestions")
    data = image_path.read_bytes()
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    detector, _ = cached_detector(config, row)
    result = detector.detect(decode_image(data, checked), conf=confidence, iou=iou)
    index = {name: i for i, name in enumerate(dataset_classes)}
    kept, skipped = [], set()
    for d in result.detections:
        if d.class_name in index:
            d.class_id = index[d.class_name]
            kept.append(d)
        else:
            skipped.add(d.class_name)
    result.detections = kept
    return SuggestionsRead(
        image_id=image_id,
        model_id=row["id"],
        detections=_detections_read(result),
        skipped_classes=sorted(skipped),
    )
