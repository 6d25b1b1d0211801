"""mAP50 and mAP50-95 from predictions and labels, computed the way ultralytics' detection validator does.

Per image, predictions in descending confidence are matched greedily to unclaimed labels of the same class at
each of the ten IoU thresholds 0.50:0.05:0.95 (`DetectionValidator.match_predictions`); per class, precision
and recall over the confidence-sorted predictions of all images give an AP by 101-point interpolation of the
precision envelope (`compute_ap`, COCO's); mAP averages over the classes that have labels. numpy only: the
accuracy gate runs it in the worker and tests/test_detection_metrics.py holds it to ultralytics' own code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0, 1, 101)
# ultralytics' validator keeps everything above this confidence, with NMS at IoU 0.7 and at most 300 boxes.
VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.7, 300


@dataclass
class ImageResult:
    """One image: predicted boxes (xyxy pixels), their confidences and classes, and the labels' boxes and classes."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    label_boxes: np.ndarray
    label_classes: np.ndarray


@dataclass
class MapResult:
    map50: float
    map50_95: float
    images: int
    labels: int
    predictions: int
    per_class: dict[int, float] = field(default_factory=dict)  # class id -> AP50-95


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(M, N) IoU of xyxy boxes a (M, 4) and b (N, 4), with ultralytics' epsilon."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    wh = np.clip(
        np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None
    )
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


def match_predictions(pred_classes: np.ndarray, label_classes: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """(N, 10) correct flags of N predictions (descending confidence) against M labels; iou is (M, N)."""
    correct = np.zeros((pred_classes.shape[0], IOU_THRESHOLDS.shape[0]), dtype=bool)
    iou = iou * (label_classes[:, None] == pred_classes[None, :])
    claimed = np.zeros((iou.shape[0], IOU_THRESHOLDS.shape[0]), dtype=bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS.min()).any(0)):
        available = np.where(claimed, 0, iou[:, j, None])
        best = available.argmax(0)
        correct[j] = available[best, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[best, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolation (COCO)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(np.trapezoid(np.interp(RECALL_POINTS, mrec, mpre), RECALL_POINTS))


def mean_average_precision(images: Iterable[ImageResult]) -> MapResult:
    """mAP50 and mAP50-95 over the images (classes without labels are not averaged, as ultralytics does)."""
    tps, confs, pred_classes, label_classes = [], [], [], []
    count = 0
    for image in images:
        count += 1
        order = np.argsort(-np.asarray(image.scores, np.float64), kind="stable")
        boxes = np.asarray(image.boxes, np.float32).reshape(-1, 4)[order]
        classes = np.asarray(image.classes).astype(np.int64)[order]
        truth = np.asarray(image.label_classes).astype(np.int64)
        if truth.size and classes.size:
            tp = match_predictions(classes, truth, box_iou(image.label_boxes, boxes))
        else:
            tp = np.zeros((classes.size, IOU_THRESHOLDS.size), dtype=bool)
        tps.append(tp)
        confs.append(np.asarray(image.scores, np.float64)[order])
        pred_classes.append(classes)
        label_classes.append(truth)
    tp = np.concatenate(tps) if tps else np.zeros((0, IOU_THRESHOLDS.size), bool)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pred = np.concatenate(pred_classes) if pred_classes else np.zeros(0, np.int64)
    target = np.concatenate(label_classes) if label_classes else np.zeros(0, np.int64)
    order = np.argsort(-conf)  # the same (unstable) sort as ultralytics' ap_per_class: ties fall alike
    tp, conf, pred = tp[order], conf[order], pred[order]
    unique, counts = np.unique(target, return_counts=True)
    ap = np.zeros((unique.size, IOU_THRESHOLDS.size))
    for ci, (cls, n_labels) in enumerate(zip(unique, counts, strict=True)):
        mask = pred == cls
        if not mask.any():
            continue
        tpc = tp[mask].cumsum(0)
        fpc = (1 - tp[mask]).cumsum(0)
        recall = tpc / (n_labels + 1e-16)
        precision = tpc / (tpc + fpc)
        for j in range(IOU_THRESHOLDS.size):
            ap[ci, j] = average_precision(recall[:, j], precision[:, j])
    return MapResult(
        map50=float(ap[:, 0].mean()) if unique.size else 0.0,
        map50_95=float(ap.mean()) if unique.size else 0.0,
        images=count,
        labels=int(target.size),
        predictions=int(pred.size),
        per_class={int(c): float(ap[i].mean()) for i, c in enumerate(unique)},
    )
