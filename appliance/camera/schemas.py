"""Request and response bodies of the live camera API, and the settings the camera process obeys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

SourceType = Literal["v4l2", "url", "gstreamer", "file"]
CameraState = Literal["stopped", "starting", "running", "reconnecting", "error", "offline"]
Precision = Literal["auto", "fp32", "fp16", "int8"]  # auto: the best export this machine can run

Confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class CameraSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything the camera process needs; stored as JSON in `settings` under key 'camera'.

    PUT replaces the whole object (fields left out take their defaults); `enabled` is the desired
    running state and is changed by POST /camera/start|stop.
    """

    source_type: SourceType = "file"
    # /dev/videoN (v4l2), rtsp://, http(s):// (url), a GStreamer pipeline ending in appsink, or a file path.
    source: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    width: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0  # v4l2: requested size, 0 = device default
    height: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0
    fps: Annotated[float, msgspec.Meta(ge=0, le=500)] = 0  # v4l2: requested rate; file: pacing (0 = file's)
    enabled: bool = False
    confidence: Confidence = 0.25
    iou: Confidence = 0.45
    precision: Precision = "auto"
    jpeg_quality: Annotated[int, msgspec.Meta(ge=30, le=100)] = 80
    max_fps: Annotated[float, msgspec.Meta(ge=0, le=500)] = (
        0  # cap on inference rate, 0 = as fast as possible
    )
    open_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 5000
    read_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 5000
    # Hard cases back into labeling: frames whose best detection is below the threshold (or with none).
    auto_capture: bool = False
    auto_capture_dataset_id: int | None = None
    auto_capture_below: Confidence = 0.5
    auto_capture_interval_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 30
    auto_capture_empty: bool = False  # also frames without any detection
    # Set by the server on PUT: whose dataset permissions auto-capture writes with.
    auto_capture_user_id: int | None = None


class CameraSettingsRead(msgspec.Struct, kw_only=True):
    settings: CameraSettings
    updated_at: str | None
    gstreamer_available: bool


class CaptureRequest(msgspec.Struct, forbid_unknown_fields=True):
    dataset_id: Annotated[int, msgspec.Meta(gt=0)]


class CaptureResult(msgspec.Struct, kw_only=True):
    image_id: int
    dataset_id: int
    boxes: int  # pre-labels stored (model classes that exist in the dataset by name)
    skipped_classes: list[str]  # model classes with no dataset class of that name
    duplicate: bool  # the same frame was already in the dataset
    frame_seq: int


class StageTiming(msgspec.Struct):
    last: float
    median: float
    p99: float


class CameraStatus(msgspec.Struct, kw_only=True):
    state: CameraState
    source_type: str = ""
    source: str = ""
    fps: float = 0.0  # frames published per second, rolling
    source_fps: float = 0.0  # frames delivered by the source per second, rolling
    frames: int = 0  # published since the process started
    dropped: int = 0  # source frames never inferred because a newer one came first
    reconnects: int = 0
    model_id: int | None = None
    model_name: str | None = None
    model_note: str = ""  # "no model deployed", "loading model 3", load errors
    error: str | None = None
    width: int = 0
    height: int = 0
    timings: dict[str, StageTiming] = msgspec.field(default_factory=dict)
    auto_captured: int = 0
    pid: int | None = None
    updated_at: float = 0.0  # wall clock of the camera process's last status write


def status_from_dict(raw: dict[str, Any]) -> CameraStatus:
    return msgspec.convert(raw, CameraStatus)
