"""Request and response bodies of the model API: models, exports, inference results, suggestions."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from appliance.stations.class_check import BrokenRule

ExportFormat = Literal["onnx", "engine"]


class ExportCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: ExportFormat = "onnx"
    half: bool = False
    int8: bool = False
    imgsz: int | None = None  # default: the model's training size
    dynamic: bool = False
    calib_images: int = 200  # INT8 calibration images sampled from the model's training snapshot


class ExportRead(msgspec.Struct, kw_only=True):
    id: int
    model_id: int
    job_id: int | None
    format: str
    precision: str
    imgsz: int
    dynamic: bool
    status: str  # pending | running | completed | failed | cancelled
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
