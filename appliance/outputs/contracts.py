"""The messages the box sends to the line, versioned (docs/outputs.md, JSON Schema under docs/schemas/), and the
records the outputs process shares with the web process (its status file) and with the outbox.

A consumer reads `schema` first: a new optional field keeps the version, anything else bumps it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.stations.contracts import SnapshotMissing

EVENT_SCHEMA = "appliance.event/1"
STATUS_SCHEMA = "appliance.status/1"
TEST_SCHEMA = "appliance.test/1"
CAMERA_STATE_SCHEMA = "appliance.camera-state/1"

# A camera as the line sees it: delivering frames, trying to get them back, stopped on purpose, or unable to run
# (no camera process, a source that cannot be opened as configured, no source).
LineState = Literal["running", "reconnecting", "stopped", "error"]


class Latencies(msgspec.Struct, kw_only=True):
    """Milliseconds of one inspection; every key is always there (the schema requires them)."""

    trigger_to_frame_ms: float  # trigger request -> arrival of the inspected frame; 0 when no trigger
    wait_model_ms: float  # waiting for this camera's turn on the shared model
    inference_ms: float  # the model's pass: letterbox, engine, decode and NMS
    total_ms: float  # trigger request (or, without a trigger, frame arrival) -> verdict


LATENCY_KEYS = tuple(Latencies.__struct_fields__)


class EventMessage(msgspec.Struct, kw_only=True):
    """One inspection event as every output sends it: MQTT `.../cameras/<id>/events`, the webhook's body, and
    the source of the OPC UA and Modbus values. `event_id` increases; consumers de-duplicate by it."""

    schema: str = EVENT_SCHEMA
    box_id: str
    event_id: int
    camera_id: int
    camera_name: str
    ts: float  # unix time at which the inspected frame arrived
    time: str  # the same instant, ISO 8601 UTC
    mode: Literal["continuous", "triggered", "interval"]
    trigger_id: int | None
    verdict: Literal["ok", "ng"]
    failing_rules: list[str]
    counts: dict[str, dict[str, int]]  # {"*" (whole frame) or zone name: {class name: count}}
    model_id: int | None
    latencies: Latencies
    width: int
    height: int
    snapshot_url: str | None  # path of the JPEG on the box's API (needs a login), null without a snapshot
    # Added in version 1 (optional): what judged it, the camera settings' revision (GET
    # /api/v1/cameras/{camera_id}/revisions/{settings_revision}) and the version of the model that ran.
    settings_revision: int | None = None
    model_version: str | None = None
    # Added in version 1 (optional): why a camera that keeps snapshots has none for this event: "disk_reserve"
    # (free space below the box's reserve), "write_failed" (the file could not be written), "queue_full" (the
    # box could not store snapshots as fast as they came); null when it has one or the camera keeps none.
    snapshot_missing: SnapshotMissing | None = None


class CameraSummary(msgspec.Struct, kw_only=True):
    id: int
    name: str
    enabled: bool
    mode: str
    # The camera's state (optional fields added to version 1: the schema stays appliance.status/1):
    state: LineState | None = None
    since: float | None = None  # unix seconds the camera entered `state`
    last_frame_age_s: float | None = None  # seconds since its newest frame arrived; null: none yet
    frames: int | None = None  # frames the camera loop processed since it started
    inspections: int | None = None  # frames the model and rules inspected since it started (the heartbeat)
    detail: str | None = None  # why it is not running, in words ("" when running)


class CameraStateMessage(msgspec.Struct, kw_only=True):
    """`<prefix>/<box_id>/cameras/<camera_id>/state`, retained: published as soon as the state changes (and
    with the status every 30 s); an empty retained message when the camera is deleted."""

    schema: str = CAMERA_STATE_SCHEMA
    box_id: str
    camera_id: int
    camera_name: str
    state: LineState
    since: float
    last_frame_age_s: float | None
    frames: int
    inspections: int
    detail: str
    ts: float


class ModelSummary(msgspec.Struct, kw_only=True):
    id: int
    name: str


class DiskSummary(msgspec.Struct, kw_only=True):
    free_mb: int
    total_mb: int


class StatusMessage(msgspec.Struct, kw_only=True):
    """`<prefix>/<box_id>/status`, retained: `online` with what the box runs, or `offline` (the last will, or
    sent on a clean stop). Dashboards list the fleet from these."""

    schema: str = STATUS_SCHEMA
    box_id: str
    state: Literal["online", "offline"]
    ts: float | None = None
    version: str | None = None
    cameras: list[CameraSummary] | None = None
    deployed_model: ModelSummary | None = None
    disk: DiskSummary | None = None


class TestMessage(msgspec.Struct, kw_only=True):
    """What POST /outputs/{id}/test sends (MQTT `<prefix>/<box_id>/test`, or the webhook's body)."""

    schema: str = TEST_SCHEMA
    box_id: str
    output_id: int
    ts: float


class OutboxItem(msgspec.Struct, kw_only=True):
    """One queued message of one output (a row of `outbox`)."""

    id: int
    output_id: int
    event_id: int
    camera_id: int
    payload: (
        bytes  # EventMessage as JSON, built when the event was written (events may expire before delivery)
    )


class ConnectorState(msgspec.Struct, kw_only=True):
    """What the outputs process knows of one output right now (status file, merged into GET /outputs)."""

    connected: bool = False  # client outputs: connected to the broker/receiver; servers: listening
    connected_at: float | None = (
        None  # when it last connected (or started listening): orders it against errors
    )
    detail: str = ""  # in words: "connected to broker:1883", "listening on 0.0.0.0:4840, 2 clients", ...
    last_error: str | None = None
    last_error_at: float | None = None
    delivered_session: int = 0  # since the outputs process started
    triggers: int = 0  # trigger requests taken from this output since the process started


class OutputsStatusFile(msgspec.Struct, kw_only=True):
    """<runtime_dir>/outputs/status.json, replaced every second by the outputs process."""

    pid: int
    updated_at: float
    outputs: dict[str, ConnectorState]  # output id (as text: a JSON object key) -> state


def json_schemas() -> dict[str, dict[str, object]]:
    """The published contract as JSON Schema (docs/schemas/<name>.json; a test keeps the files in step)."""
    schemas: dict[str, dict[str, object]] = {}
    for name, struct in (
        ("event-v1", EventMessage),
        ("status-v1", StatusMessage),
        ("test-v1", TestMessage),
        ("camera-state-v1", CameraStateMessage),
    ):
        schema = msgspec.json.schema(struct)
        schemas[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"appliance/{name}",
            **schema,
        }
    return schemas
