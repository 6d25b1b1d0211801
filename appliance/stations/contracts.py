"""The records an inspection leaves: an event (as the camera hands it off, and as a stored row) and its boxes.

These are the contract with the line outputs (MQTT, OPC UA, Modbus, webhooks): `events.record_events`
writes `InspectionEvent`s and hands the stored `EventRow`s to every hook in `events.ON_EVENT_WRITTEN`
inside the same transaction.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.inference.pipeline import Detection
from appliance.stations.genicam import CameraFeatures

Mode = Literal["continuous", "triggered", "interval"]
Verdict = Literal["ok", "ng"]
# Why an event of a camera that keeps snapshots has none: free space below the reserve (disk_min_free_mb), the
# file could not be written, or the writer's in-memory queue of snapshots was full (camera/writer.py).
SnapshotMissing = Literal["disk_reserve", "write_failed", "queue_full"]
WHOLE_FRAME = "*"  # the key of the whole frame in counts (zones are keyed by name)


class ZoneShape(msgspec.Struct):
    """A zone as the event saw it (zones may be edited later; the event keeps its own copy)."""

    name: str
    points: list[tuple[float, float]]


class InspectionEvent(msgspec.Struct, kw_only=True):
    """One inspection (triggered, interval) or one change of the verdict (continuous)."""

    camera_id: int
    ts: float  # unix time at which the inspected frame arrived from the source
    mode: Mode
    verdict: Verdict
    trigger_id: int | None = None
    failing_rules: list[str] = msgspec.field(default_factory=list)
    # {zone name or "*": {class name: count}} of the detections above the camera's confidence
    counts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    detections: list[Detection] = msgspec.field(default_factory=list)  # as stored: rounded (camera.station)
    zones: list[ZoneShape] = msgspec.field(default_factory=list)
    model_id: int | None = None
    # trigger_to_frame_ms (0 without a trigger), wait_model_ms, inference_ms, total_ms (trigger or frame ->
    # verdict): camera/latencies.py
    latencies: dict[str, float] = msgspec.field(default_factory=dict)
    width: int = 0
    height: int = 0
    snapshot: str | None = None  # path of the JPEG relative to <data_dir>/events
    snapshot_bytes: int = 0
    # GigE / USB3 Vision: exposure, gain, pixel format, trigger as read back from the camera, and the camera's
    # own frame id and timestamp (null for other sources)
    camera_features: CameraFeatures | None = None
    # What judged it: the revision of the camera's settings (GET /cameras/{id}/revisions/{rev}) and the model's
    # version (format, precision, input size, engine, build time of the export that ran).
    settings_revision: int | None = None
    model_version: str | None = None
    snapshot_missing: SnapshotMissing | None = None  # null when it has its snapshot or the camera keeps none


class EventRow(InspectionEvent, kw_only=True):
    """An event as stored: the row id is the event id (increasing; outputs de-duplicate by it)."""

    id: int


class TriggerRow(msgspec.Struct, kw_only=True):
    id: int
    camera_id: int
    source: str  # "http", "mqtt", "modbus", "opcua", ...
    requested_at: float  # unix time
    requested_mono: float  # time.monotonic() of the requester (one clock for every process of the box)
    status: Literal["pending", "done", "expired"] = "pending"
    event_id: int | None = None
    detail: str | None = None
