"""Request and response bodies of the evaluation API: evaluations, their images, comparisons."""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.evaluation.contracts import ErrorBoxes, EvaluationSummary
from appliance.ids import RowId

EvaluationStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
ImageFilter = Literal["all", "errors", "false_positives", "misses", "wrong_class", "missing"]


class EvaluationCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to evaluate the model on, exactly one of: a dataset as it is now (its labeled and reviewed images
    are frozen into a split), the val split of a training run, or a split already frozen (to compare models on
    the very same images). `export_id` evaluates an export (ONNX, engine) instead of the training weights."""

    dataset_id: RowId | None = None
    training_job_id: RowId | None = None
    split_id: RowId | None = None
    export_id: RowId | None = None


class SplitRead(msgspec.Struct, kw_only=True):
    id: int
    kind: Literal["training", "dataset"]
    dataset_id: int | None
    dataset_name: str
    training_job_id: int | None
    classes: list[str]
    images: int
    boxes: int
    fingerprint: str
    created_at: str


class EvaluationRead(msgspec.Struct, kw_only=True):
    id: int
    model_id: int
    model_name: str
    split: SplitRead
    source: str  # "weights" (best.pt) or the export's file name
    status: EvaluationStatus
    error: str | None
    job_id: int | None
    progress: dict[str, int] = msgspec.field(default_factory=dict)  # done / total images while it runs
    summary: EvaluationSummary | None = None
    # Images of the split the model was trained on (only a dataset split can hold some): its figures flatter it.
    trained_on: int = 0
    created_at: str
    finished_at: str | None


class EvaluationBrief(msgspec.Struct, kw_only=True):
    """The newest evaluation of one model, for the Models list."""

    id: int
    model_id: int
    split_id: int
    status: EvaluationStatus
    images: int
    map50: float | None
    map50_95: float | None


class BoxRead(msgspec.Struct, kw_only=True):
    class_id: int
    class_name: str
    confidence: float | None = None  # predictions only
    x1: float
    y1: float
    x2: float
    y2: float


class EvaluationImageRead(msgspec.Struct, kw_only=True):
    position: int
    # The image in its dataset, when it is still there and the caller may open it (thumbnails, the labeler).
    image_id: int | None
    dataset_id: int | None
    width: int
    height: int
    labels_changed: bool  # the image was relabeled after the split was frozen
    missing: str | None  # why the image was not evaluated
    labels: list[BoxRead]  # as frozen
    predictions: list[BoxRead]  # above the operating confidence
    errors: ErrorBoxes  # indices into labels / predictions
    false_positives: int
    misses: int
    wrong_class: int


class EvaluationImagePage(msgspec.Struct, kw_only=True):
    items: list[EvaluationImageRead]
    next_after: int | None  # pass as `after` for the next page; null at the end


class ImageDisagreement(msgspec.Struct, kw_only=True):
    """One image where two models' confident predictions differ (a box one has and the other lacks, or
    another class)."""

    position: int
    image_id: int | None
    dataset_id: int | None
    width: int
    height: int
    labels: list[BoxRead]
    a: list[BoxRead]
    b: list[BoxRead]
    a_errors: int  # false positives + misses + wrong class, against the frozen labels
    b_errors: int
    better: Literal["a", "b", "same"]  # fewer errors


class CompareRead(msgspec.Struct, kw_only=True):
    a: EvaluationRead
    b: EvaluationRead
    images: int  # evaluated by both
    disagreements: int
    a_better: int
    b_better: int
    shown: list[ImageDisagreement]  # those with the biggest difference in errors first (at most `limit`)
