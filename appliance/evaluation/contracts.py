"""What an evaluation hands between the web, the worker and the evaluation child, as typed records.

- `EvaluateParams`: an "evaluate" job's params (which evaluation row it fills).
- `ChildSpec`: <data_dir>/evaluations/<id>/job.json, written by the worker for the child: the weights or
  export to run, the frozen images with their boxes, the class mapping.
- `ChildResult`: result.json, the child's answer: the summary and one `ImageOutcome` per image.
- `EvaluationSummary`: what the catalog keeps and the API shows of a finished evaluation.
"""

from __future__ import annotations

from typing import Literal

import msgspec

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
KIND = "evaluate"

# A frozen box: class id in the split's class list, then x1, y1, x2, y2 in the image's pixels.
Box = tuple[int, float, float, float, float]
# A prediction kept for people: class id in the split's class list, confidence, x1, y1, x2, y2.
Prediction = tuple[int, float, float, float, float, float]


class EvaluateParams(msgspec.Struct, kw_only=True):
    evaluation_id: int


class SplitItem(msgspec.Struct, kw_only=True, array_like=True):
    """One frozen image: its position in the split, the file (by content) and its boxes then."""

    position: int
    path: str  # the original in the image store (content-addressed)
    boxes: list[Box]


class ChildSpec(msgspec.Struct, kw_only=True):
    evaluation_id: int
    source: Literal["weights", "export"]
    path: str  # best.pt, or the export file
    imgsz: int
    model_classes: list[str]
    split_classes: list[str]
    # model class id -> split class id (by name); a model class missing from the split maps to -1
    class_map: list[int]
    items: list[SplitItem]
    parent_pid: int
    ultralytics_config_dir: str
    max_image_pixels: int = 80_000_000
    max_image_bytes: int = 64 << 20
    conf: float = 0.001  # as Ultralytics' val: the whole precision-recall curve
    iou: float = 0.7


class ErrorBoxes(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Indices into the image's labels (`missed`) and kept predictions (`false_positives`, `wrong_class`)."""

    missed: list[int] = msgspec.field(default_factory=list)
    false_positives: list[int] = msgspec.field(default_factory=list)
    wrong_class: list[tuple[int, int]] = msgspec.field(default_factory=list)  # (prediction, label)


class ImageOutcome(msgspec.Struct, kw_only=True, array_like=True):
    """One image at the confusion matrix's operating point (confidence > 0.25, IoU > 0.45)."""

    position: int
    missing: str | None  # why the image could not be evaluated (its file is gone, unreadable), else None
    predictions: list[Prediction]  # above the operating confidence, most confident first (at most 100)
    errors: ErrorBoxes  # (indices past the 100 stored predictions are left out of the lists, not the counts)
    false_positives: int = 0
    misses: int = 0
    wrong_class: int = 0


class ClassMetrics(msgspec.Struct, kw_only=True):
    class_id: int
    name: str
    images: int  # images with at least one label of the class
    labels: int
    precision: float
    recall: float
    f1: float
    map50: float
    map50_95: float
    pr_curve: list[float]  # precision at recall 0, 0.01 ... 1 (IoU 0.5)
    f1_curve: list[float]  # F1 at confidence 0, 0.01 ... 1


class EvaluationSummary(msgspec.Struct, kw_only=True):
    """The figures of one evaluation; the means are over the classes that have labels (as Ultralytics')."""

    images: int
    images_evaluated: int
    images_missing: int
    labels: int
    predictions: int  # above the operating confidence
    precision: float
    recall: float
    map50: float
    map50_95: float
    best_confidence: float  # where the mean F1 is highest: precision and recall are read there
    classes: list[ClassMetrics]
    confusion_matrix: list[list[int]]  # [predicted][true], the last row and column are background
    matrix_classes: list[str]  # the split's class names (matrix order), then "background"
    operating_confidence: float
    operating_iou: float
    images_with_false_positives: int
    images_with_misses: int
    images_with_wrong_class: int
    labels_of_unknown_classes: int = 0  # labels of split classes the model does not have: left out
    predictions_of_unknown_classes: int = 0  # predictions of model classes the split does not have: left out
    seconds: float = 0.0
    backend: str = ""


class ChildResult(msgspec.Struct, kw_only=True):
    status: Literal["completed", "failed"]
    error: str | None = None
    summary: EvaluationSummary | None = None
    outcomes: list[ImageOutcome] = msgspec.field(default_factory=list)


class ChildProgress(msgspec.Struct, kw_only=True):
    """A line the child prints on stdout while it runs: {"done": n, "total": m}."""

    done: int
    total: int
