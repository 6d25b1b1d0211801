"""What the model domain hands between processes and files, as typed records.

- `ExportParams` / `ExportResult`: an "export" job's params (queued by the web, or by a process that found an
  engine built elsewhere) and its result (written by the worker).
- `ModelMetadata` / `ArtifactInfo`: `models/<id>/metadata.json`, one entry per exported file.
- `PrecisionGate`: the box's measurement of a reduced precision (INT8, BF16, FP16) against FP32, kept on the
  export's record (and on its file's entry when it was accepted).
- `NewModel`: what a finished training hands the registry to become a models row.

The JSON keys are the ones the console, the tests and older files already use.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from appliance.classes import ClassEntry
from appliance.inference.contracts import TensorInfo
from appliance.models.schemas import ExportFormat

Precision = Literal["fp32", "fp16", "bf16", "int8"]
REDUCED_PRECISIONS = ("fp16", "bf16", "int8")


class PrecisionGate(msgspec.Struct, kw_only=True):
    """A reduced precision measured on this box against its baseline on the model's frozen validation split:
    accepted only when mAP50-95 drops by at most `max_drop_points` and it runs `min_speedup` times faster."""

    engine: str  # openvino | tensorrt
    device: str
    precision: str  # the candidate: int8 | bf16 | fp16
    baseline_precision: str  # fp32 (OpenVINO), or what TensorRT runs otherwise (fp16)
    val_images: int
    val_labels: int
    baseline_map50_95: float
    candidate_map50_95: float
    map_drop_points: float  # (baseline - candidate) x 100
    baseline_ms: float  # median model call on this box
    candidate_ms: float
    speedup: float  # baseline_ms / candidate_ms
    max_drop_points: float
    min_speedup: float
    accepted: bool
    reason: str
    calibration_images: int = 0
    evaluated_at: str = ""


class ArtifactInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One exported file's entry in metadata.json (and an export's `metadata`); unset fields are left out."""

    format: ExportFormat
    precision: Precision
    imgsz: int
    dynamic: bool
    inputs: list[TensorInfo] | None = None
    outputs: list[TensorInfo] | None = None
    opset: int | None = None
    source_job_id: int | None = None
    built_at: str | None = None
    built_at_unix: float | None = None
    versions: dict[str, str] | None = None
    # Engines only: the ONNX file it was built from, where and with what it was built.
    onnx: str | None = None
    device: str | None = None
    tensorrt_version: str | None = None
    calibration_images: int | None = None
    # Reduced precisions: the accuracy gate's measurement (an artifact without an accepted one never runs).
    gate: PrecisionGate | None = None
    # In the export's record only (model_exports.metadata and the job result), not in metadata.json.
    build_seconds: float | None = None
    bytes: int | None = None


class ModelMetadata(msgspec.Struct, kw_only=True):
    """models/<id>/metadata.json: the model-level fields, then every exported file by name."""

    model_id: int | None = None
    name: str | None = None
    classes: list[ClassEntry] = msgspec.field(default_factory=list)
    imgsz: int | None = None
    training_job_id: int | None = None
    artifacts: dict[str, ArtifactInfo] = msgspec.field(default_factory=dict)


class ExportParams(msgspec.Struct, kw_only=True):
    """An "export" job's params: the export row it fills and what to build."""

    model_id: int
    format: ExportFormat
    precision: Precision = "fp32"
    imgsz: int
    dynamic: bool = False
    calib_images: int = 200
    export_id: int = 0  # 0: a job queued without a model_exports row (nothing to update)
    rebuild: bool = False  # an engine built elsewhere, queued again for this machine


class ExportResult(msgspec.Struct, kw_only=True):
    export_id: int
    model_id: int
    file: str
    metadata: ArtifactInfo


class NewModel(msgspec.Struct, kw_only=True):
    """A finished training's model: the row's fields. params, metrics and snapshot are stored as JSON as the
    trainer gives them (Structs or plain values) and shown by the API as objects."""

    job_id: int
    dataset_id: int | None
    created_by: int | None
    name: str  # empty: "<dataset> <base model> job <id>"
    base_model: str
    classes: list[str]
    imgsz: int
    params: Any
    metrics: Any
    snapshot: Any
    # The dataset's owner and public flag when the training was asked for (None: not recorded, older jobs).
    owner_id: int | None = None
    is_public: bool = False
