"""mAP50-95 of appliance/models/detection_metrics.py against ultralytics' own: its matching and AP functions on
the same predictions, and its validator's result on a trained tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.models.detection_metrics import ImageResult, box_iou, match_predictions, mean_average_precision
from tests.models import synthetic_image


def jittered_predictions(seed: int) -> ImageResult:
    """Labels of a synthetic image and predictions near them: shifted boxes, wrong classes, misses, extras."""
    rng = np.random.default_rng(seed)
    _, truth = synthetic_image(seed, 96)
    labels = np.asarray([t[1:] for t in truth], np.float32)
    classes = np.asarray([t[0] for t in truth], np.int64)
    boxes, scores, predicted = [], [], []
    for box, cls in zip(labels, classes, strict=True):
        if rng.random() < 0.15:
            continue  # missed
        for _ in range(int(rng.integers(1, 3))):  # sometimes a duplicate
            boxes.append(box + rng.normal(0, 3, 4))
            scores.append(float(rng.uniform(0.05, 1)))
            predicted.append(int(cls) if rng.random() > 0.1 else 1 - int(cls))
    for _ in range(int(rng.integers(0, 3))):  # false positives elsewhere
        x, y = rng.uniform(0, 70, 2)
        boxes.append(np.asarray([x, y, x + 20, y + 20], np.float32))
        scores.append(float(rng.uniform(0.01, 0.6)))
        predicted.append(int(rng.integers(0, 2)))
    order = np.argsort(-np.asarray(scores))
    return ImageResult(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4)[order],
        scores=np.asarray(scores)[order],
        classes=np.asarray(predicted, np.int64)[order],
        label_boxes=labels,
        label_classes=classes,
    )


def ultralytics_map(images: list[ImageResult]) -> tuple[float, float]:
    """(mAP50, mAP50-95) by ultralytics' DetectionValidator matching and ap_per_class, on the same data."""
    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class
    from ultralytics.utils.metrics import box_iou as their_iou

    validator = DetectionValidator()
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    tps, confs, preds, targets = [], [], [], []
    for image in images:
        if len(image.label_classes) and len(image.classes):
            iou = their_iou(torch.from_numpy(image.label_boxes), torch.from_numpy(image.boxes))
            tp = validator.match_predictions(
                torch.from_numpy(image.classes), torch.from_numpy(image.label_classes), iou
            ).numpy()
        else:
            tp = np.zeros((len(image.classes), 10), bool)
        tps.append(tp)
        confs.append(image.scores)
        preds.append(image.classes)
        targets.append(image.label_classes)
    result = ap_per_class(
        np.concatenate(tps), np.concatenate(confs), np.concatenate(preds), np.concatenate(targets)
    )
    ap = result[5]
    return float(ap[:, 0].mean()), float(ap.mean())


def test_iou_and_matching_follow_ultralytics() -> None:
    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import box_iou as their_iou

    image = jittered_predictions(3)
    ours = box_iou(image.label_boxes, image.boxes)
    theirs = their_iou(torch.from_numpy(image.label_boxes), torch.from_numpy(image.boxes)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    validator = DetectionValidator()
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    expected = validator.match_predictions(
        torch.from_numpy(image.classes), torch.from_numpy(image.label_classes), torch.from_numpy(theirs)
    ).numpy()
    assert (match_predictions(image.classes, image.label_classes, ours) == expected).all()


def test_map_equals_ultralytics_on_the_same_predictions() -> None:
    images = [jittered_predictions(seed) for seed in range(40)]
    ours = mean_average_precision(images)
    map50, map50_95 = ultralytics_map(images)
    assert 0.2 < ours.map50_95 < 0.95  # neither trivial nor perfect: the comparison means something
    assert ours.map50 == pytest.approx(map50, abs=1e-9) and ours.map50_95 == pytest.approx(map50_95, abs=1e-9)
    assert ours.images == 40 and ours.labels == sum(len(i.label_classes) for i in images)


def test_map_edge_cases() -> None:
    perfect = ImageResult(
        boxes=np.asarray([[10, 10, 30, 30]], np.float32),
        scores=np.asarray([0.9]),
        classes=np.asarray([1]),
        label_boxes=np.asarray([[10, 10, 30, 30]], np.float32),
        label_classes=np.asarray([1]),
    )
    # 0.995, not 1: ultralytics' 101-point interpolation ends its recall axis with a sentinel at precision 0.
    assert mean_average_precision([perfect]).map50_95 == pytest.approx(0.995)
    nothing_found = ImageResult(
        np.zeros((0, 4), np.float32),
        np.zeros(0),
        np.zeros(0, np.int64),
        perfect.label_boxes,
        perfect.label_classes,
    )
    assert mean_average_precision([nothing_found]).map50_95 == 0.0
    background = ImageResult(
        perfect.boxes, perfect.scores, perfect.classes, np.zeros((0, 4)), np.zeros(0, np.int64)
    )
    empty = mean_average_precision([background])
    assert empty.labels == 0 and empty.map50_95 == 0.0 and empty.predictions == 1


@pytest.mark.slow
def test_map_equals_ultralytics_val_on_a_trained_tiny_model(tiny_yolo: Path, tmp_path: Path) -> None:
    """ultralytics' validator on the tiny model's dataset; our mAP from the very predictions and labels it saw."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect.val import DetectionValidator

    from tests.models import write_yolo_dataset

    data_yaml = write_yolo_dataset(tmp_path / "dataset", count=24, size=96, val_every=2)
    seen: list[ImageResult] = []
    original = DetectionValidator.update_metrics

    def recording(self: Any, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        for index, pred in enumerate(preds):
            truth = self._prepare_batch(index, batch)
            predicted = self._prepare_pred(pred)
            seen.append(
                ImageResult(
                    boxes=predicted["bboxes"].cpu().numpy(),
                    scores=predicted["conf"].cpu().numpy(),
                    classes=predicted["cls"].cpu().numpy().astype(np.int64),
                    label_boxes=truth["bboxes"].cpu().numpy(),
                    label_classes=truth["cls"].cpu().numpy().astype(np.int64),
                )
            )
        original(self, preds, batch)

    DetectionValidator.update_metrics = recording  # type: ignore[method-assign]
    try:
        metrics = YOLO(str(tiny_yolo)).val(
            data=str(data_yaml), imgsz=64, batch=4, device="cpu", plots=False, verbose=False,
            project=str(tmp_path / "val"), workers=0,
        )  # fmt: skip
    finally:
        DetectionValidator.update_metrics = original  # type: ignore[method-assign]
    ours = mean_average_precision(seen)
    assert ours.images == 12 and ours.predictions > 0
    assert ours.map50_95 == pytest.approx(float(metrics.box.map), abs=1e-6)
    assert ours.map50 == pytest.approx(float(metrics.box.map50), abs=1e-6)
