"""The evaluation's metrics (numpy, appliance/evaluation/metrics.py) against Ultralytics' own functions on the
same matches, and the confusion matrix's bookkeeping: every label and every kept prediction counted once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.evaluation.metrics import (
    MATRIX_CONFIDENCE,
    Accumulator,
    ImagePredictions,
    ImageTruth,
    box_iou,
    correct_at_thresholds,
)

NC = 3


def random_image(rng: np.random.Generator) -> tuple[ImageTruth, ImagePredictions]:
    """Labels, and predictions that are jittered copies (some of another class), plus strays and duplicates."""
    n = int(rng.integers(0, 6))
    xy = rng.uniform(0, 400, (n, 2))
    wh = rng.uniform(10, 120, (n, 2))
    truth = ImageTruth(rng.integers(0, NC, n), np.concatenate([xy, xy + wh], axis=1))
    boxes, classes, scores = [], [], []
    for box, cls in zip(truth.boxes, truth.classes, strict=True):
        for _ in range(int(rng.integers(0, 3))):  # 0: a miss, 2: a duplicate
            jitter = rng.normal(0, 0.12, 4) * np.tile(box[2:] - box[:2], 2)
            boxes.append(box + jitter)
            classes.append(cls if rng.random() > 0.15 else int(rng.integers(0, NC)))
            scores.append(float(rng.uniform(0.001, 1.0)))
    for _ in range(int(rng.integers(0, 4))):  # predictions on nothing
        x, y = rng.uniform(0, 400, 2)
        w, h = rng.uniform(10, 100, 2)
        boxes.append(np.array([x, y, x + w, y + h]))
        classes.append(int(rng.integers(0, NC)))
        scores.append(float(rng.uniform(0.001, 0.9)))
    predictions = ImagePredictions.of(classes, scores, [list(b) for b in boxes])
    return truth, predictions


@pytest.fixture(scope="module")
def images() -> list[tuple[ImageTruth, ImagePredictions]]:
    rng = np.random.default_rng(7)
    return [random_image(rng) for _ in range(300)]


@pytest.fixture(scope="module")
def ultralytics_metrics() -> Any:
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import metrics

    return metrics, DetectionValidator


def test_matching_and_ap_equal_ultralytics(images: list[Any], ultralytics_metrics: Any) -> None:
    import torch

    metrics, validator_class = ultralytics_metrics
    validator = validator_class(args={"conf": 0.001})
    ours = Accumulator(NC)
    stats: dict[str, list[np.ndarray]] = {"tp": [], "conf": [], "pred_cls": [], "target_cls": []}
    for truth, predictions in images:
        ours.add(truth, predictions)
        if truth.classes.size and predictions.classes.size:
            iou = metrics.box_iou(torch.tensor(truth.boxes), torch.tensor(predictions.boxes))
            theirs = validator.match_predictions(
                torch.tensor(predictions.classes), torch.tensor(truth.classes), iou
            ).numpy()
        else:
            theirs = np.zeros((predictions.classes.size, 10), dtype=bool)
        assert (theirs == correct_at_thresholds(truth, predictions)).all()
        stats["tp"].append(theirs)
        stats["conf"].append(predictions.scores)
        stats["pred_cls"].append(predictions.classes)
        stats["target_cls"].append(truth.classes)
    joined = {k: np.concatenate(v, 0) for k, v in stats.items()}
    _, _, p, r, _, ap, classes, *_ = metrics.ap_per_class(
        joined["tp"], joined["conf"], joined["pred_cls"], joined["target_cls"]
    )
    summary = ours.summary()
    assert summary.classes == list(classes)
    assert np.allclose(summary.ap50, ap[:, 0], atol=1e-9)
    assert np.allclose(summary.ap50_95, ap.mean(1), atol=1e-9)
    assert np.allclose(summary.precision, p, atol=1e-9)
    assert np.allclose(summary.recall, r, atol=1e-9)
    assert 0.05 < summary.map50_95 < summary.map50 < 1.0  # a meaningful mix of hits and errors


def test_confusion_matrix_equals_ultralytics_and_adds_up(images: list[Any], ultralytics_metrics: Any) -> None:
    import torch

    metrics, _ = ultralytics_metrics
    theirs = metrics.ConfusionMatrix(names={i: str(i) for i in range(NC)})
    ours = Accumulator(NC)
    labels = np.zeros(NC, dtype=int)
    kept = np.zeros(NC, dtype=int)
    for truth, predictions in images:
        match = ours.add(truth, predictions)
        detections = {
            "bboxes": torch.tensor(predictions.boxes),
            "conf": torch.tensor(predictions.scores),
            "cls": torch.tensor(predictions.classes),
        }
        batch = {"bboxes": torch.tensor(truth.boxes), "cls": torch.tensor(truth.classes)}
        theirs.process_batch(detections, batch, conf=MATRIX_CONFIDENCE)
        np.add.at(labels, truth.classes, 1)
        confident = predictions.classes[predictions.scores > MATRIX_CONFIDENCE]
        np.add.at(kept, confident, 1)
        # The error lists of the image are the matrix's off-diagonal and background cells.
        assert len(match.missed) + len(match.label_of) == truth.classes.size
        assert len(match.false_positives) + len(match.label_of) == confident.size
    assert (ours.matrix == theirs.matrix.astype(int)).all()
    matrix = ours.matrix
    assert (matrix[:, :NC].sum(axis=0) == labels).all()  # each label once, in its class's column
    assert (matrix[:NC, :].sum(axis=1) == kept).all()  # each kept prediction once, in its class's row
    assert matrix[NC, NC] == 0
    assert matrix[NC, :NC].sum() > 0 and matrix[:NC, NC].sum() > 0  # misses and false positives both occur


def test_iou_of_touching_identical_and_disjoint_boxes() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [10, 0, 20, 10], [5, 0, 15, 10]]))
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 1] == 0.0 and iou[0, 2] == pytest.approx(1 / 3)


def test_no_labels_and_no_predictions_give_zeros_not_errors() -> None:
    ours = Accumulator(2)
    ours.add(ImageTruth.of([], []), ImagePredictions.of([], [], []))
    ours.add(ImageTruth.of([], []), ImagePredictions.of([1], [0.9], [[0, 0, 5, 5]]))
    summary = ours.summary()
    assert summary.classes == [] and summary.map50_95 == 0.0
    assert ours.matrix[1, 2] == 1  # a false positive on an image without labels
