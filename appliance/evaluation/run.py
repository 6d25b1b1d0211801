"""Evaluating one model on frozen images: predictions per image, the metrics, and the per-image errors.

`evaluate_items` is what the evaluation child runs; `evaluate_detector` is the same for a model already
loaded by `appliance.inference` (the INT8 accuracy gate compares an engine's mAP50-95 with the FP32 one's
this way, on the model's own training val split: `training_split_items`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from appliance.evaluation import metrics
from appliance.evaluation.contracts import (
    ClassMetrics,
    ErrorBoxes,
    EvaluationSummary,
    ImageOutcome,
    Prediction,
    SplitItem,
)
from appliance.evaluation.predict import RawBackend, decode_every_class
from appliance.imaging.check import check_image_bytes, decode_image
from appliance.inference.pipeline import Detector, Letterboxer

MAX_KEPT_PREDICTIONS = 100  # per image, for people (the metrics use every prediction)
DEFAULT_MAX_DET = 300


def class_map_by_name(model_classes: Sequence[str], split_classes: Sequence[str]) -> list[int]:
    """model class id -> split class id, matched by name (case-insensitive); -1 where the split has none."""
    index = {name.lower(): i for i, name in enumerate(split_classes)}
    return [index.get(name.lower(), -1) for name in model_classes]


def _outcome(
    position: int, predictions: metrics.ImagePredictions, match: metrics.MatrixMatch
) -> ImageOutcome:
    # Predictions are sorted by confidence, so the kept ones (above the operating confidence) come first and
    # an index into them is an index into the stored list.
    kept: list[Prediction] = []
    for i in match.kept[:MAX_KEPT_PREDICTIONS]:
        x1, y1, x2, y2 = (round(float(v), 1) for v in predictions.boxes[i])
        kept.append((int(predictions.classes[i]), round(float(predictions.scores[i]), 4), x1, y1, x2, y2))
    stored = len(kept)
    errors = ErrorBoxes(
        missed=list(match.missed),
        false_positives=[p for p in match.false_positives if p < stored],
        wrong_class=[(p, match.label_of[p]) for p in match.wrong_class if p < stored],
    )
    return ImageOutcome(
        position=position,
        missing=None,
        predictions=kept,
        errors=errors,
        false_positives=len(match.false_positives),
        misses=len(match.missed),
        wrong_class=len(match.wrong_class),
    )


def evaluate_items(
    items: Sequence[SplitItem],
    backend: RawBackend,
    input_size: tuple[int, int],
    model_classes: Sequence[str],
    split_classes: Sequence[str],
    class_map: Sequence[int],
    *,
    conf: float = 0.001,
    iou: float = 0.7,
    max_image_pixels: int = 80_000_000,
    max_image_bytes: int = 64 << 20,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvaluationSummary, list[ImageOutcome]]:
    """Run the backend on every item and measure it against the item's frozen boxes."""
    started = time.monotonic()
    known = {target for target in class_map if target >= 0}
    mapping = np.asarray(list(class_map) or [-1], dtype=np.int64)
    letterbox = Letterboxer(input_size, backend.input_dtype)
    accumulator = metrics.Accumulator(len(split_classes))
    max_det = max([DEFAULT_MAX_DET, *(len(item.boxes) for item in items)])
    outcomes: list[ImageOutcome] = []
    unknown_labels = unknown_predictions = missing = 0
    for done, item in enumerate(items, start=1):
        try:
            with Path(item.path).open("rb") as handle:  # at most one byte past the limit is read
                data = handle.read(max_image_bytes + 1)
            checked = check_image_bytes(data, max_bytes=max_image_bytes, max_pixels=max_image_pixels)
            image = decode_image(data, checked)
        except (
            Exception
        ) as exc:  # a file gone since the split was frozen, or unreadable: counted, not guessed
            missing += 1
            reason = "its file is gone" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"[:200]
            outcomes.append(
                ImageOutcome(position=item.position, missing=reason, predictions=[], errors=ErrorBoxes())
            )
            continue
        labels = [box for box in item.boxes if box[0] in known]
        unknown_labels += len(item.boxes) - len(labels)
        truth = metrics.ImageTruth.of([b[0] for b in labels], [list(b[1:]) for b in labels])
        tensor, gains, pad = letterbox(image)
        boxes, scores, classes = decode_every_class(
            backend.infer(tensor), gains, pad, conf, iou, max_det, len(model_classes)
        )
        targets = mapping[np.clip(classes, 0, mapping.size - 1)] if classes.size else classes
        mine = (classes < len(model_classes)) & (targets >= 0) if classes.size else np.zeros(0, dtype=bool)
        unknown_predictions += int((~mine).sum())
        predictions = metrics.ImagePredictions(targets[mine], scores[mine], boxes[mine])
        match = accumulator.add(truth, predictions)
        outcomes.append(_outcome(item.position, predictions, match))
        if progress is not None:
            progress(done, len(items))
    summary = summarize(accumulator, split_classes, outcomes, missing)
    summary.labels_of_unknown_classes = unknown_labels
    summary.predictions_of_unknown_classes = unknown_predictions
    summary.seconds = round(time.monotonic() - started, 3)
    summary.backend = backend.key
    return summary, outcomes


def summarize(
    accumulator: metrics.Accumulator, split_classes: Sequence[str], outcomes: list[ImageOutcome], missing: int
) -> EvaluationSummary:
    result = accumulator.summary()
    per_class = []
    for k, class_id in enumerate(result.classes):
        curves = result.curves[class_id]
        p, r = curves.precision_at_confidence, curves.recall_at_confidence
        per_class.append(
            ClassMetrics(
                class_id=class_id,
                name=split_classes[class_id] if class_id < len(split_classes) else str(class_id),
                images=int(accumulator.images_per_class[class_id]) if class_id < len(split_classes) else 0,
                labels=result.labels[k],
                precision=round(result.precision[k], 5),
                recall=round(result.recall[k], 5),
                f1=round(result.f1[k], 5),
                map50=round(result.ap50[k], 5),
                map50_95=round(result.ap50_95[k], 5),
                pr_curve=metrics.downsample(curves.precision_at_recall),
                f1_curve=metrics.downsample(2 * p * r / (p + r + metrics.EPS)),
            )
        )
    evaluated = [o for o in outcomes if o.missing is None]
    return EvaluationSummary(
        images=len(outcomes),
        images_evaluated=len(evaluated),
        images_missing=missing,
        labels=int(sum(result.labels)),
        predictions=int(accumulator.matrix[:-1, :].sum()),
        precision=round(result.mean_precision, 5),
        recall=round(result.mean_recall, 5),
        map50=round(result.map50, 5),
        map50_95=round(result.map50_95, 5),
        best_confidence=round(result.best_confidence, 3),
        classes=per_class,
        confusion_matrix=accumulator.matrix.astype(int).tolist(),
        matrix_classes=[*split_classes, "background"],
        operating_confidence=metrics.MATRIX_CONFIDENCE,
        operating_iou=metrics.MATRIX_IOU,
        images_with_false_positives=sum(1 for o in evaluated if o.false_positives),
        images_with_misses=sum(1 for o in evaluated if o.misses),
        images_with_wrong_class=sum(1 for o in evaluated if o.wrong_class),
    )


def evaluate_detector(
    detector: Detector, items: Sequence[SplitItem], split_classes: Sequence[str]
) -> tuple[EvaluationSummary, list[ImageOutcome]]:
    """An `appliance.inference` Detector (any backend, any precision) on frozen items; classes by name."""
    names = list(detector.class_names)
    return evaluate_items(
        items,
        detector.backend,
        detector.input_size,
        names,
        split_classes,
        class_map_by_name(names, split_classes),
    )
