"""What training hands between the web, the worker and the training child, as typed records.

- `TrainParams`: a "train" job's params (the validated request, the resolved base model, the classes, and
  the flags crash recovery adds); `TrainResult` / `TrainFailure`: its result.
- `ChildJob`: <run_dir>/job.json, written by the worker for the child; `ChildResult`: <run_dir>/result.json,
  the child's final record; `CheckpointRecord`: <run_dir>/checkpoint/last.json beside the copy of last.pt;
  `SnapshotSummary`: <run_dir>/snapshot.json.

Files are decoded with `read_record`, whose error names the file. The JSON keys are the ones the console,
the tests and runs left on disk by earlier versions already use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import msgspec

from appliance.training.schemas import EpochMetrics

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
SNAPSHOT_FILE = "snapshot.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_RECORD = "last.json"
EXIT_OK = 0  # the child's exit status when completed or cancelled: result.json says which
EXIT_FAILED = 2  # failed, with the reason in result.json

T = TypeVar("T")


class MalformedRecord(ValueError):
    """A run's file that is missing, not JSON or not of its record's shape; the message names the file."""


def read_record(path: Path, record_type: type[T]) -> T:
    try:
        return msgspec.json.decode(path.read_bytes(), type=record_type)
    except OSError as exc:
        raise MalformedRecord(f"{path} cannot be read: {exc}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedRecord(f"{path} is malformed: {exc}") from None


def encode_record(record: msgspec.Struct) -> bytes:
    """A record as written to its file: indented, for people reading a run folder."""
    return msgspec.json.format(msgspec.json.encode(record), indent=1)


# --- the job ----------------------------------------------------------------------------------------


class TrainRequest(msgspec.Struct, kw_only=True):
    """A training request once validated (TrainingJobCreate with every field set) and its class names;
    also what a model records as its training params."""

    dataset_id: int
    base_model: str
    epochs: int
    imgsz: int
    batch: int
    patience: int
    device: str
    val_ratio: float
    seed: int
    workers: int
    plots: bool
    name: str
    classes: list[str]


class TrainParams(TrainRequest, kw_only=True, omit_defaults=True):
    """A "train" job's params: the request, what ultralytics' YOLO() opens, and the recovery flags."""

    model_source: str  # an architecture YAML name or an absolute .pt path
    # The dataset's owner and public flag when the job was created: the model's visibility (models/registry.py).
    dataset_owner_id: int | None = None
    dataset_public: bool = False
    resume: bool = False  # continue from the checkpoint copy (set by crash recovery)
    finalize: bool = False  # the child finished; only the bookkeeping is left (set by crash recovery)


class FinalMetrics(EpochMetrics, kw_only=True):
    """The final validation of best.pt after the last epoch."""

    best_epoch: int | None = None


class OomRetry(msgspec.Struct):
    from_batch: int
    to_batch: int
    error: str


class NetworkAttempt(msgspec.Struct):
    """A connection (or name lookup) to an address off the box, seen by the child's audit hook."""

    event: str
    host: str
    port: int | str | None
    at: float


class SnapshotSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The dataset snapshot of a run; the images and annotation versions are rows of training_snapshot_images."""

    job_id: int
    dataset_id: int
    run_dir: str
    data_yaml: str
    classes: list[str]
    val_ratio: float
    seed: int
    images: int
    train_images: int
    val_images: int
    boxes: int
    background_images: int
    class_images: dict[str, dict[str, int]] | None = None  # per split, images per class name
    images_table: str
    seconds: float
    cpu_seconds: float


class TrainResult(msgspec.Struct, kw_only=True):
    """A finished (or cancelled) training's result, as the API and the console show it."""

    status: str | None
    metrics: EpochMetrics | None  # the final validation, else the last epoch
    epochs_done: int
    seconds: float | None
    device: str | None
    batch: int | None
    oom_retry: OomRetry | None
    resumed_from_epoch: int | None
    network_attempts: list[NetworkAttempt]
    network_guard: str | None
    snapshot: SnapshotSummary  # without class_images
    run_dir: str
    model_id: int | None = None
    advice: list[str] = msgspec.field(default_factory=list)  # what the losses say about the settings


class TrainFailure(msgspec.Struct, kw_only=True):
    """What a failed training keeps as its result: the child's last word on it."""

    error: str | None = None
    oom_retry: OomRetry | None = None
    network_attempts: list[NetworkAttempt] = msgspec.field(default_factory=list)
    epochs_done: int = 0
    history: list[EpochMetrics] = msgspec.field(default_factory=list)


# --- files of a run ----------------------------------------------------------------------------------


class ChildJob(msgspec.Struct, kw_only=True):
    """<run_dir>/job.json: what the training child runs."""

    job_id: int
    db_path: str
    data_yaml: str
    params: TrainParams
    resume: bool
    history: list[EpochMetrics]  # epochs already done (kept across a resume)
    parent_pid: int
    ultralytics_config_dir: str
    # The data disk's reserve (config disk_min_free_mb): training stops before its checkpoints eat into it.
    disk_min_free_mb: int = 512


class TrainOutcome(msgspec.Struct, kw_only=True):
    """How the training ran: where, with what batch, after an out-of-memory retry or a resume."""

    device: str | None = None
    batch: int | None = None
    oom_retry: OomRetry | None = None
    resumed_from_epoch: int | None = None


class ChildResult(TrainOutcome, kw_only=True):
    """<run_dir>/result.json: the child's final record, written whatever happened."""

    status: Literal["completed", "cancelled", "failed"]
    network_guard: str | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    epochs_done: int = 0
    history: list[EpochMetrics] = msgspec.field(default_factory=list)
    final: FinalMetrics | None = None
    best: str | None = None  # path of best.pt, when one was written
    network_attempts: list[NetworkAttempt] = msgspec.field(default_factory=list)


class CheckpointRecord(msgspec.Struct):
    """<run_dir>/checkpoint/last.json: which epoch the copy of last.pt holds, its size and checksum."""

    epoch: int
    epochs: int
    size: int
    sha256: str
