"""Detection metrics in numpy: matching, per-class precision / recall / AP, the confusion matrix, PR curves.

The single source of the box's accuracy figures (training evaluations, comparisons, the INT8 gate). They are
computed the way Ultralytics' `val` computes them (8.4), so a model's numbers here equal those of `yolo val`
on the same images and weights:

- a prediction is correct at an IoU threshold (0.50, 0.55, ... 0.95) when it has the same class as a label it
  overlaps at least that much; predictions are taken by falling confidence and each claims the unclaimed
  label it overlaps most, once per threshold;
- AP is the area under the precision envelope sampled at 101 recall points (COCO), with the curve dropping to
  zero past the highest recall reached; mAP averages the classes that have labels;
- precision and recall per class are read at the one confidence where the mean F1 over classes (smoothed) is
  highest;
- the confusion matrix takes predictions above 0.25 confidence, matches them to labels at IoU > 0.45 whatever
  the class (so a right box of the wrong class shows as a confusion), and adds a background row (labels no
  prediction found: misses) and column (predictions on nothing: false positives). Every label lands in exactly
  one cell of its class's column and every kept prediction in exactly one cell of its class's row.

numpy only: any process may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # where AP samples the precision envelope (COCO)
CONFIDENCE_GRID = np.linspace(0.0, 1.0, 1000)  # where precision, recall and F1 are read against confidence
CURVE_POINTS = np.linspace(0.0, 1.0, 101)  # what is kept of each curve for the console
MATRIX_CONFIDENCE = 0.25  # predictions below this are not in the confusion matrix (nor in the error lists)
MATRIX_IOU = 0.45  # a prediction and a label overlapping more than this are one object in the matrix
EPS = 1e-16


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (M, 4) with every box of `b` (N, 4), xyxy: an (M, N) matrix."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-7)


@dataclass
class ImageTruth:
    """The labels of one image: class ids (M,) and xyxy boxes (M, 4) in its pixels."""

    classes: np.ndarray
    boxes: np.ndarray

    @classmethod
    def of(cls, classes: list[int], boxes: list[list[float]]) -> ImageTruth:
        return cls(
            np.asarray(classes, dtype=np.int64).reshape(-1), np.asarray(boxes, np.float64).reshape(-1, 4)
        )


@dataclass
class ImagePredictions:
    """One image's predictions, highest confidence first: class ids (N,), confidences (N,), xyxy boxes (N, 4)."""

    classes: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @classmethod
    def of(cls, classes: list[int], scores: list[float], boxes: list[list[float]]) -> ImagePredictions:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        return cls(
            np.asarray(classes, dtype=np.int64).reshape(-1)[order],
            np.asarray(scores, dtype=np.float64).reshape(-1)[order],
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order],
        )


def correct_at_thresholds(truth: ImageTruth, predictions: ImagePredictions) -> np.ndarray:
    """(N, 10) bool: whether each prediction (highest confidence first) is a true positive at each IoU threshold."""
    n = predictions.classes.shape[0]
    correct = np.zeros((n, IOU_THRESHOLDS.size), dtype=bool)
    if n == 0 or truth.classes.shape[0] == 0:
        return correct
    iou = box_iou(truth.boxes, predictions.boxes)
    iou = iou * (truth.classes[:, None] == predictions.classes[None, :])  # only boxes of the same class match
    claimed = np.zeros((iou.shape[0], IOU_THRESHOLDS.size), dtype=bool)
    columns = np.arange(IOU_THRESHOLDS.size)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS[0]).any(axis=0)):
        overlap = np.where(claimed, 0.0, iou[:, j, None])  # (labels, thresholds): unclaimed labels only
        best = overlap.argmax(axis=0)
        correct[j] = overlap[best, columns] >= IOU_THRESHOLDS
        claimed[best, columns] |= correct[j]
    return correct


@dataclass
class MatrixMatch:
    """One image at the confusion matrix's operating point: which label each kept prediction took."""

    kept: np.ndarray  # indices of the predictions above MATRIX_CONFIDENCE
    label_of: dict[int, int]  # prediction index -> label index, for the matched ones
    missed: list[int]  # label indices no kept prediction matched
    false_positives: list[int]  # prediction indices that matched no label
    wrong_class: list[int]  # prediction indices matched to a label of another class


def match_for_matrix(truth: ImageTruth, predictions: ImagePredictions) -> MatrixMatch:
    """Class-agnostic one-to-one matching of the confident predictions to the labels (IoU > MATRIX_IOU)."""
    kept = np.flatnonzero(predictions.scores > MATRIX_CONFIDENCE)
    label_of: dict[int, int] = {}
    if kept.size and truth.classes.shape[0]:
        iou = box_iou(truth.boxes, predictions.boxes[kept])
        candidates = np.flatnonzero((iou > MATRIX_IOU).any(axis=0))
        order = candidates[np.argsort(-predictions.scores[kept][candidates], kind="stable")]
        for column in order:
            label = int(iou[:, column].argmax())
            if iou[label, column] > MATRIX_IOU:
                label_of[int(kept[column])] = label
                iou[label] = 0.0  # a label is taken once
    matched_labels = set(label_of.values())
    missed = [i for i in range(truth.classes.shape[0]) if i not in matched_labels]
    false_positives = [int(p) for p in kept if int(p) not in label_of]
    wrong = [p for p, label in label_of.items() if predictions.classes[p] != truth.classes[label]]
    return MatrixMatch(kept, label_of, missed, false_positives, sorted(wrong))


def add_to_matrix(
    matrix: np.ndarray, truth: ImageTruth, predictions: ImagePredictions, match: MatrixMatch
) -> None:
    """Count one image into the (nc + 1, nc + 1) matrix indexed [predicted, true]; the last index is background."""
    background = matrix.shape[0] - 1
    for prediction, label in match.label_of.items():
        matrix[predictions.classes[prediction], truth.classes[label]] += 1
    for label in match.missed:
        matrix[background, truth.classes[label]] += 1
    for prediction in match.false_positives:
        matrix[predictions.classes[prediction], background] += 1


def _precision_envelope_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve: 101-point area under the precision envelope; also the envelope (mrec, mpre)."""
    last = recall[-1] if recall.size else 1.0
    mrec = np.concatenate(([0.0], recall, [last], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    sampled = np.interp(RECALL_POINTS, mrec, mpre)
    ap = float(np.sum((sampled[1:] + sampled[:-1]) * np.diff(RECALL_POINTS)) / 2.0)
    return ap, mrec, mpre


def box_filter(values: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Moving average over `fraction` of the length (odd width, ends padded with the edge values)."""
    width = round(len(values) * fraction * 2) // 2 + 1
    pad = np.ones(width // 2)
    padded = np.concatenate((pad * values[0], values, pad * values[-1]))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


@dataclass
class ClassCurves:
    ap: np.ndarray  # (10,) AP at each IoU threshold
    precision_at_confidence: np.ndarray  # (1000,) over CONFIDENCE_GRID
    recall_at_confidence: np.ndarray
    precision_at_recall: np.ndarray  # (1000,) envelope at IoU 0.5 over CONFIDENCE_GRID read as recall


@dataclass
class Summary:
    """Per class (the classes with labels, ascending) and overall figures."""

    classes: list[int]
    labels: list[int]  # labels (instances) per class
    precision: list[float]
    recall: list[float]
    f1: list[float]
    ap50: list[float]
    ap50_95: list[float]
    best_confidence: float  # where the mean F1 is highest (smoothed): precision and recall are read there
    curves: dict[int, ClassCurves] = field(default_factory=dict)

    @property
    def mean_precision(self) -> float:
        return float(np.mean(self.precision)) if self.precision else 0.0

    @property
    def mean_recall(self) -> float:
        return float(np.mean(self.recall)) if self.recall else 0.0

    @property
    def map50(self) -> float:
        return float(np.mean(self.ap50)) if self.ap50 else 0.0

    @property
    def map50_95(self) -> float:
        return float(np.mean(self.ap50_95)) if self.ap50_95 else 0.0


def summarize(
    correct: np.ndarray, scores: np.ndarray, pred_classes: np.ndarray, label_classes: np.ndarray
) -> Summary:
    """Per-class AP, precision and recall over every image's predictions (correct (K, 10), scores (K,),
    classes (K,)) and every label's class."""
    order = np.argsort(-scores)
    correct, scores, pred_classes = correct[order], scores[order], pred_classes[order]
    classes, counts = np.unique(label_classes.astype(np.int64), return_counts=True)
    n = classes.size
    ap = np.zeros((n, IOU_THRESHOLDS.size))
    p_curve = np.zeros((n, CONFIDENCE_GRID.size))
    r_curve = np.zeros((n, CONFIDENCE_GRID.size))
    pr_curve = np.zeros((n, CONFIDENCE_GRID.size))
    for k, class_id in enumerate(classes):
        mine = pred_classes == class_id
        if not mine.any():
            continue
        hits = correct[mine].astype(np.float64)
        tp = hits.cumsum(axis=0)
        fp = (1.0 - hits).cumsum(axis=0)
        recall = tp / (counts[k] + EPS)
        precision = tp / (tp + fp)
        # Confidence falls along the predictions: interpolate on its negative so that x increases.
        r_curve[k] = np.interp(-CONFIDENCE_GRID, -scores[mine], recall[:, 0], left=0)
        p_curve[k] = np.interp(-CONFIDENCE_GRID, -scores[mine], precision[:, 0], left=1)
        for t in range(IOU_THRESHOLDS.size):
            ap[k, t], mrec, mpre = _precision_envelope_ap(recall[:, t], precision[:, t])
            if t == 0:
                pr_curve[k] = np.interp(CONFIDENCE_GRID, mrec, mpre)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + EPS)
    best = int(box_filter(f1_curve.mean(axis=0), 0.1).argmax()) if n else 0
    return Summary(
        classes=[int(c) for c in classes],
        labels=[int(c) for c in counts],
        precision=[float(v) for v in p_curve[:, best]],
        recall=[float(v) for v in r_curve[:, best]],
        f1=[float(v) for v in f1_curve[:, best]],
        ap50=[float(v) for v in ap[:, 0]],
        ap50_95=[float(v) for v in ap.mean(axis=1)] if n else [],
        best_confidence=float(CONFIDENCE_GRID[best]),
        curves={
            int(c): ClassCurves(ap[k], p_curve[k], r_curve[k], pr_curve[k]) for k, c in enumerate(classes)
        },
    )


def downsample(curve: np.ndarray) -> list[float]:
    """A 1000-point curve over [0, 1] as the 101 points the console draws, rounded to 4 decimals."""
    return [round(float(v), 4) for v in np.interp(CURVE_POINTS, CONFIDENCE_GRID, curve)]


class Accumulator:
    """Feed images one by one (`add`), then `summary()` and the confusion `matrix` (nc + 1 square)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        self._correct: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._pred_classes: list[np.ndarray] = []
        self._label_classes: list[np.ndarray] = []
        self.images = 0
        self.images_per_class = np.zeros(num_classes, dtype=np.int64)

    def add(self, truth: ImageTruth, predictions: ImagePredictions) -> MatrixMatch:
        self.images += 1
        self._correct.append(correct_at_thresholds(truth, predictions))
        self._scores.append(predictions.scores)
        self._pred_classes.append(predictions.classes)
        self._label_classes.append(truth.classes)
        for class_id in np.unique(truth.classes):
            if 0 <= class_id < self.num_classes:
                self.images_per_class[class_id] += 1
        match = match_for_matrix(truth, predictions)
        add_to_matrix(self.matrix, truth, predictions, match)
        return match

    def summary(self) -> Summary:
        def joined(parts: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
            return np.concatenate(parts, axis=0) if parts else np.zeros(shape, dtype=dtype)

        return summarize(
            joined(self._correct, (0, IOU_THRESHOLDS.size), bool),
            joined(self._scores, (0,), np.float64),
            joined(self._pred_classes, (0,), np.int64),
            joined(self._label_classes, (0,), np.int64),
        )
