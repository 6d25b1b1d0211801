"""Request and response bodies of the training API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from appliance.drives import DrivePath
from appliance.ids import RowId

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
DEVICE_PATTERN = r"^(auto|cpu|[0-9]{1,2}(,[0-9]{1,2}){0,7})$"
Device = Annotated[str, msgspec.Meta(pattern=DEVICE_PATTERN)]


class TrainingJobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A training request; defaults suit a Jetson Orin Nano (8 GB shared memory)."""

    dataset_id: RowId
    base_model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "yolov8n.yaml"
    epochs: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    imgsz: Annotated[int, msgspec.Meta(ge=32, le=2048, multiple_of=32)] = 640
    batch: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    patience: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    device: Device = "auto"
    val_ratio: Annotated[float, msgspec.Meta(ge=0.05, le=0.5)] = 0.2
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    workers: Annotated[int, msgspec.Meta(ge=0, le=8)] = 2
    plots: bool = True
    name: Annotated[str, msgspec.Meta(max_length=120)] = ""


class EpochMetrics(msgspec.Struct, kw_only=True):
    epoch: int
    box_loss: float | None = None
    cls_loss: float | None = None
    dfl_loss: float | None = None
    val_box_loss: float | None = None
    val_cls_loss: float | None = None
    val_dfl_loss: float | None = None
    precision: float | None = None
    recall: float | None = None
    map50: float | None = None
    map50_95: float | None = None
    lr: float | None = None
    seconds: float | None = None


class TrainingJobRead(msgspec.Struct, kw_only=True):
    id: int
    status: JobStatus
    dataset_id: int | None
    base_model: str
    params: dict[str, Any]
    epoch: int = 0  # epochs finished
    epochs: int = 0
    batch: int = 0  # batch within the current epoch
    batches: int = 0
    fraction: float = 0.0  # 0..1 of the whole run
    eta_s: float | None = None
    stage: str = ""
    metrics: list[EpochMetrics] = msgspec.field(default_factory=list)
    model_id: int | None = None
    error: str | None = None
    log_tail: str | None = None
    plots: list[str] = msgspec.field(default_factory=list)
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    cancel_requested: bool = False
    attempts: int = 0
    waiting_reason: str | None = None  # why a pending job has not started (no worker, busy lane, ...)
    created_by: int | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None


class TrainingJobSummary(msgspec.Struct, kw_only=True):
    id: int
    status: JobStatus
    dataset_id: int | None
    base_model: str
    epochs: int
    imgsz: int
    epoch: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    map50_95: float | None = None
    model_id: int | None = None
    error: str | None = None
    created_at: str = ""
    finished_at: str | None = None
    waiting_reason: str | None = None


class BaseModelRead(msgspec.Struct, kw_only=True):
    id: str  # what POST /training-jobs takes as base_model
    kind: Literal["architecture", "weights", "model"]
    name: str
    description: str = ""
    classes: list[str] = msgspec.field(default_factory=list)
    imgsz: int | None = None
    created_at: str | None = None


class BaseWeightsRead(msgspec.Struct, kw_only=True):
    """A base weights file in <data_dir>/weights/."""

    id: str  # what POST /training-jobs takes as base_model: weights:<name>
    name: str
    size: int
    sha256: str
    pinned: bool  # its checksum is the one the pinned list gives this name


class WeightsCandidate(msgspec.Struct, kw_only=True):
    """A .pt file found on a USB drive under the import roots."""

    path: str
    name: str
    size: int
    listed: bool  # its name is in the pinned list (the checksum is checked when it is imported)


class WeightsImport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: DrivePath


class ClassCount(msgspec.Struct, kw_only=True):
    class_id: int
    name: str
    images: int  # labeled (or reviewed) images with at least one box of the class
    boxes: int  # its boxes on labeled (or reviewed) images


class TimeEstimate(msgspec.Struct, kw_only=True):
    seconds: float  # the whole run at most (patience may stop it earlier)
    per_epoch_s: float
    basis: str  # how the figure was made (measured here, or the fixed figure it starts from)
    engine: str = "PyTorch (ultralytics)"  # what trains
    device_name: str = ""  # the CPU or GPU it trains on, by name
    inference: str = ""  # the engine and device the trained model then runs on here


class TrainingPlanRead(msgspec.Struct, kw_only=True):
    """GET /training-jobs/plan: what a training of this dataset from this base would use and take."""

    dataset_id: int
    base_model: str
    from_scratch: bool
    labeled_images: int  # labeled or reviewed: what training takes
    unlabeled_images: int
    pending_review_images: int  # unlabeled images holding model proposals nobody reviewed
    background_images: int  # labeled images without boxes (negatives)
    boxes: int
    classes: list[ClassCount]
    recommended_epochs: int
    recommended_imgsz: int
    recommended_batch: int
    why: list[str]
    warnings: list[str]
    gpus: int  # NVIDIA GPUs of this box (0: training runs on the CPU)
    device: Literal["cpu", "gpu"]  # where "auto" (or the device asked for) trains
    estimate: TimeEstimate
