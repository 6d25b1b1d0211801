"""Request and response bodies of cameras and events, and the per-camera settings the camera process obeys."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.ids import RowId
from appliance.inference.engines import EnginePin
from appliance.stations.contracts import Mode, TriggerRow
from appliance.stations.genicam import GenicamSettings, GenicamStatus

SourceType = Literal["v4l2", "url", "gstreamer", "file", "gige"]
Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]  # auto: the best export this machine can run
Condition = Literal["==", ">=", "<=", "between", "present", "absent"]
CameraState = Literal["stopped", "starting", "running", "reconnecting", "error", "offline"]

Confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Coordinate = Annotated[float, msgspec.Meta(ge=0, le=16384)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class Zone(msgspec.Struct, forbid_unknown_fields=True):
    """A polygon in the camera image's pixels; a detection is in the zone when its box centre is."""

    name: Name
    points: Annotated[list[tuple[Coordinate, Coordinate]], msgspec.Meta(min_length=3, max_length=64)]


class Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Detections of `classes` (any class when empty) at `min_confidence` or more, in `zone` (the whole
    frame when null), counted and compared: `==`, `>=`, `<=` count; `between` count..max_count;
    `present` (at least one); `absent` (none)."""

    name: Name
    zone: Name | None = None
    classes: Annotated[list[Annotated[str, msgspec.Meta(max_length=128)]], msgspec.Meta(max_length=64)] = (
        msgspec.field(default_factory=list)
    )
    min_confidence: Confidence = 0.25
    condition: Condition = "present"
    count: Count = 1
    max_count: Count | None = None


class CameraSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything the camera process needs for one camera; PUT replaces the whole object."""

    source_type: SourceType = "file"
    # /dev/videoN (v4l2), rtsp://, http(s):// (url), a GStreamer pipeline ending in appsink, a file path, or
    # gige://<serial, device id or IP> (GigE Vision / USB3 Vision through Aravis).
    source: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    width: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0  # v4l2: requested size, 0 = device default
    height: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0
    fps: Annotated[float, msgspec.Meta(ge=0, le=500)] = 0  # v4l2: requested rate; file: pacing (0 = file's)
    open_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 5000
    read_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 5000
    model_id: RowId | None = None  # null: the deployed model
    precision: Precision = "auto"
    engine: EnginePin = "auto"  # auto: the model's pin, else the box's choice (docs/models.md)
    confidence: Confidence = 0.25  # detections below are not reported (rules may ask for more)
    iou: Confidence = 0.45
    jpeg_quality: Annotated[int, msgspec.Meta(ge=30, le=100)] = 80
    max_fps: Annotated[float, msgspec.Meta(ge=0, le=500)] = 0  # cap on inspections per second, 0 = none
    mode: Mode = "continuous"
    interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=86_400)] = 5.0  # mode interval
    debounce_frames: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3  # mode continuous
    snapshots: bool = True  # keep a JPEG of each event's frame
    zones: Annotated[list[Zone], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    rules: Annotated[list[Rule], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=list)
    genicam: GenicamSettings | None = (
        None  # gige sources: exposure, gain, pixel format, ROI, trigger (null: defaults)
    )


class CameraWrite(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /cameras and PUT /cameras/{id}: `enabled` left out keeps the current state (stopped when new)."""

    name: Name
    settings: CameraSettings = msgspec.field(default_factory=CameraSettings)
    enabled: bool | None = None


class CameraRead(msgspec.Struct, kw_only=True):
    id: int
    name: str
    enabled: bool
    settings: CameraSettings  # the source's password is masked for everyone but admins
    created_at: str
    updated_at: str


class StageTiming(msgspec.Struct):
    last: float
    median: float
    p99: float


class CameraStatus(msgspec.Struct, kw_only=True):
    """What the camera process publishes for one camera (status.json), offline when it is not running."""

    camera_id: int
    state: CameraState
    source_type: str = ""
    source: str = ""
    fps: float = 0.0  # frames inspected and published per second, rolling
    source_fps: float = 0.0
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0  # attempts to open the source again, counted while it retries
    source_lost_at: float | None = None  # unix time the source was lost; null while it delivers
    retries: int = 0  # attempts since source_lost_at
    model_id: int | None = None
    model_name: str | None = None
    model_note: str = ""  # the model, what runs it (engine, device, precision) and how its frames are batched
    batch_sizes: dict[str, int] = msgspec.field(default_factory=dict)  # this camera's frames per call size
    error: str | None = None
    width: int = 0
    height: int = 0
    verdict: str | None = None  # of the latest frame (continuous: the debounced verdict)
    failing_rules: list[str] = msgspec.field(default_factory=list)
    events: int = 0  # handed to the event writer since the process started
    events_held: int = 0  # events of the camera process not in the catalog yet (held while it cannot write)
    storage_note: str = ""  # in words, while events cannot be written or are kept without snapshots
    timings: dict[str, StageTiming] = msgspec.field(default_factory=dict)
    genicam: GenicamStatus | None = None  # gige sources: device, features read back, transport, incidents
    pid: int | None = None
    updated_at: float = 0.0
    state_since: float = 0.0  # unix time the source entered `state`
    last_frame_at: float | None = None  # unix time the newest frame arrived from the source (null: none yet)
    inspections: int = 0  # frames the model and rules inspected since the camera loop started


class TriggerAccepted(msgspec.Struct, kw_only=True):
    trigger_id: int
    camera_id: int


TriggerRead = TriggerRow


class CaptureRequest(msgspec.Struct, forbid_unknown_fields=True):
    dataset_id: RowId


class CaptureResult(msgspec.Struct, kw_only=True):
    image_id: int
    dataset_id: int
    boxes: int  # pre-labels stored (model classes that exist in the dataset by name)
    skipped_classes: list[str]
    duplicate: bool
    # Detections not stored as pre-labels, by reason: boxes + the counts = the detections of the frame.
    left_out: dict[str, int] = msgspec.field(default_factory=dict)


class CameraCounters(msgspec.Struct, kw_only=True):
    camera_id: int
    ok: int
    ng: int


class CountersRead(msgspec.Struct, kw_only=True):
    since: float
    cameras: list[CameraCounters]
    until: float | None = None  # null: no end
    # The range counted: the one asked, or wider where the rows of an end are gone (exact false; see
    # docs/stations.md "Counts"); counted_until is null when the range has no end.
    counted_since: float | None = None
    counted_until: float | None = None
    exact: bool = True


# --- the shift report (stations/report.py) ---------------------------------------------------------------

ReportBucket = Literal["minute", "hour", "day"]


class ReportPoint(msgspec.Struct, kw_only=True):
    start: float  # unix time; the point covers [start, start + bucket_s)
    ok: int
    ng: int


class RuleCount(msgspec.Struct, kw_only=True):
    rule: str
    ng: int  # events this rule failed in


class CameraReport(msgspec.Struct, kw_only=True):
    camera_id: int  # 0: the deleted cameras past the report's 32 rows, folded into one (named "N more ...")
    name: str | None  # null once the camera is deleted (its counts stay)
    ok: int
    ng: int
    ng_rate: float | None  # ng / (ok + ng); null without events
    points: list[ReportPoint]
    top_rules: list[RuleCount]


class EventReport(msgspec.Struct, kw_only=True):
    """OK/NG per bucket, the NG rate and the top failing rules, for all cameras (or the one asked) and per
    camera, over [since, until)."""

    since: float
    until: float
    bucket: ReportBucket
    bucket_s: int
    counted_since: float
    counted_until: float
    exact: bool
    ok: int
    ng: int
    ng_rate: float | None
    points: list[ReportPoint]
    top_rules: list[RuleCount]
    cameras: list[CameraReport]


class ReportPeriod(msgspec.Struct, kw_only=True):
    key: str  # shift, previous-shift, today, yesterday, week
    label: str
    since: float
    until: float
    bucket: ReportBucket


class ReportPeriods(msgspec.Struct, kw_only=True):
    """The periods the report offers, in the box's time zone, from the configured shift starts."""

    timezone: str
    shift_starts: list[str]
    periods: list[ReportPeriod]
