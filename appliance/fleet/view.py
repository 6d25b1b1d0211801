"""The Fleet page's data: every box the fleet process saw on the broker (<runtime_dir>/fleet/view.json, replaced
atomically by that process), read by the web process, which never connects to the broker for a page view."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.camera.publish import replace_file
from appliance.config import Config
from appliance.fleet.contracts import FleetStatus
from appliance.fleet.schemas import FleetBoxRead, FleetRead
from appliance.fleet.store import describe
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.system.processes import is_alive, read_heartbeat

VIEW_FILE = "view.json"
MAX_VIEW_BYTES = 64 * 1024 * 1024


class ViewEntry(msgspec.Struct, kw_only=True):
    box_id: str
    online: bool = False
    since: float | None = None  # online since (from the box), or seen going offline at (by this box)
    last_seen: float | None = None  # the latest online message's time
    fleet: dict[str, Any] | None = None  # <prefix>/<box>/fleet as received (decoded defensively when read)
    line_status: dict[str, Any] | None = None  # <prefix>/<box>/status (the line outputs' message) as received


class FleetView(msgspec.Struct, kw_only=True):
    pid: int
    updated_at: float
    broker: str
    connected: bool = False
    error: str | None = None
    boxes: dict[str, ViewEntry] = msgspec.field(default_factory=dict)


def view_path(config: Config) -> Path:
    return config.runtime_path / "fleet" / VIEW_FILE


def write_view(config: Config, view: FleetView) -> None:
    path = view_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, msgspec.json.encode(view))


def read_view(config: Config) -> FleetView | None:
    path = view_path(config)
    try:
        if path.stat().st_size > MAX_VIEW_BYTES:
            return None
        return msgspec.json.decode(path.read_bytes(), type=FleetView)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def broker_text(config: Config) -> str:
    return f"{config.fleet_broker_host}:{config.fleet_broker_port}" if config.fleet_broker_host else ""


def fleet_configured(config: Config) -> bool:
    return bool(config.fleet_broker_host or config.fleet_store_bucket)


def _status(raw: dict[str, Any] | None) -> FleetStatus | None:
    """A box's fleet message, read field by field: a newer box's extra or changed fields must not hide it."""
    if not isinstance(raw, dict):
        return None
    try:
        return msgspec.convert(raw, FleetStatus)
    except msgspec.ValidationError:
        known = {f: raw[f] for f in ("box_id", "state", "since", "ts", "version", "console_url") if f in raw}
        try:
            return msgspec.convert({"box_id": "?", "state": "offline", **known}, FleetStatus)
        except msgspec.ValidationError:
            return None


def fleet_read(config: Config) -> FleetRead:
    me = configured_box_id(config)
    beat = read_heartbeat(config.runtime_path, "fleet")
    running = is_alive(beat, time.time())
    view = read_view(config) if running else None
    if not fleet_configured(config):
        note = "this box is in no fleet: set fleet_broker_host and fleet_store_bucket (docs/fleet.md)"
    elif not running:
        note = "the fleet process is not running: start `appliance fleet` (`appliance run` starts it)"
    else:
        note = beat.doing if beat else ""
    boxes = [
        FleetBoxRead(
            box_id=entry.box_id,
            online=entry.online,
            since=entry.since,
            last_seen=entry.last_seen,
            status=_status(entry.fleet),
            line_status=entry.line_status,
            this_box=entry.box_id == me,
        )
        for entry in sorted((view.boxes if view else {}).values(), key=lambda e: (e.box_id != me, e.box_id))
    ]
    return FleetRead(
        box_id=me,
        configured=fleet_configured(config),
        broker=broker_text(config),
        store=describe(config),
        agent_running=running,
        agent_note=note,
        broker_connected=bool(view and view.connected),
        broker_error=view.error if view else None,
        updated_at=view.updated_at if view else None,
        boxes=boxes,
    )


__all__ = ["FleetView", "ViewEntry", "fleet_read", "read_view", "write_view"]
