"""Request and response bodies of the model API: models, exports, inference results, suggestions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from appliance.inference.engines import EnginePin
from appliance.stations.class_check import BrokenRule

ExportFormat = Literal["onnx", "engine", "openvino"]
ExportPrecision = Literal["fp32", "fp16", "bf16", "int8"]


class ExportCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """onnx: the FP32 file every engine starts from. engine: a TensorRT engine (half: FP16, int8: INT8).
    openvino: a reduced precision for OpenVINO (`precision` int8, bf16 or fp16; FP32 runs the ONNX file).
    INT8, BF16 and FP16 other than TensorRT's are measured by the accuracy gate before they may run."""

    format: ExportFormat = "onnx"
    half: bool = False
    int8: bool = False
    precision: ExportPrecision | None = None  # instead of half/int8
    # default: the model's training size
    imgsz: Annotated[int, msgspec.Meta(ge=32, le=2048, multiple_of=32)] | None = None
    dynamic: bool = False  # height and width dynamic too (the batch axis always is)
    # INT8 calibration images sampled from the model's training snapshot (train split)
    calib_images: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 200


class ExportRead(msgspec.Struct, kw_only=True):
    id: int
    model_id: int
    job_id: int | None
    format: str
    precision: str
    imgsz: int
    dynamic: bool
    status: str  # pending | running | completed | refused (by the accuracy gate) | failed | cancelled
    file: str | None
    metadata: dict[str, Any]
    error: str | None
    created_at: str
    finished_at: str | None
    progress: dict[str, Any] = msgspec.field(default_factory=dict)


class ClassInfo(msgspec.Struct):
    name: str
    color: str = ""


class ModelRead(msgspec.Struct, kw_only=True):
    id: int
    name: str
    dataset_id: int | None
    dataset_name: str | None
    job_id: int | None
    base_model: str
    classes: list[ClassInfo]
    imgsz: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    deployed: bool
    created_at: str
    exports: list[ExportRead]
    has_weights: bool
    ready: bool  # has a completed export that the inference pipeline can load
    owner_id: int | None = None  # the dataset's owner when it was trained (visibility survives the dataset)
    is_public: bool = False  # the dataset was public when it was trained: every user sees the model
    can_manage: bool = False  # the caller may deploy, undeploy and delete it (admin or owner)
    engine: str = "auto"  # the engine pinned for this model (auto: the box's choice)
    runs_on: str = ""  # what /inference runs it on here: engine, device and precision


class EnginePinUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PUT /models/{id}/engine: pin the engine this model runs on (a camera's own pin still wins)."""

    engine: EnginePin = "auto"


class Box(msgspec.Struct):
    x1: float
    y1: float
    x2: float
    y2: float


class DetectionRead(msgspec.Struct):
    class_id: int
    class_name: str
    confidence: float
    box: Box


class InferenceRead(msgspec.Struct, kw_only=True):
    model_id: int
    backend: str
    precision: str
    device: str = ""  # where it ran: CPU, the Intel GPU or NVIDIA GPU's name
    width: int
    height: int
    detections: list[DetectionRead]
    timings: dict[str, float]  # preprocess_ms, inference_ms, postprocess_ms, total_ms


class SuggestionsRead(msgspec.Struct, kw_only=True):
    image_id: int
    model_id: int
    detections: list[DetectionRead]
    skipped_classes: list[str] = msgspec.field(default_factory=list)  # model classes missing from the dataset


class DeployRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /models/{id}/deploy: `deploy_anyway` deploys even when cameras' rules count classes the model lacks."""

    deploy_anyway: bool = False


class DeployCheck(msgspec.Struct, kw_only=True):
    """GET /models/{id}/deploy-check: what deploying the model would do, for the console to confirm first."""

    model_id: int
    ready: bool  # has a completed export the cameras can load
    not_ready_reason: str | None  # why it cannot be deployed yet (export it first)
    unusable_reason: str | None  # its validation says it finds (almost) nothing
    classes: list[str]
    broken_rules: list[
        BrokenRule
    ]  # rules of cameras following the deployed model that count classes it lacks
