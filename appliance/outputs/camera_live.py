"""Each camera as the line sees it: `running | reconnecting | stopped | error`, since when, the age of its newest
frame, and its frames and inspections counters, followed by the outputs process from the catalog and the
camera process's status files (`<runtime_dir>/cameras/<id>/status.json`, rewritten twice a second).

The outputs process polls every POLL_S and hands the whole picture to every output, with the cameras whose
state changed: MQTT publishes those on their retained state topic at once, Modbus and OPC UA refresh their
registers and variables (the inspections counter is the PLC's heartbeat).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import msgspec

from appliance.camera.publish import live_status
from appliance.db import Database
from appliance.outputs.contracts import CameraStateMessage, CameraSummary, LineState

POLL_S = 0.5
STATE_CODES: dict[LineState, int] = {"stopped": 0, "running": 1, "reconnecting": 2, "error": 3}
NO_CAMERA_PROCESS = "the camera process is not running"


class CameraLive(msgspec.Struct, kw_only=True, frozen=True):
    camera_id: int
    name: str
    enabled: bool
    mode: str
    state: LineState
    since: float  # unix seconds
    last_frame_at: float | None  # unix seconds the newest frame arrived (null: none yet)
    frames: int
    inspections: int
    detail: str  # why it is not running ("" when it is); no credentials (the camera process redacts)

    def frame_age(self, now: float) -> float | None:
        return None if self.last_frame_at is None else round(max(0.0, now - self.last_frame_at), 3)

    def summary(self, now: float) -> CameraSummary:
        return CameraSummary(
            id=self.camera_id, name=self.name, enabled=self.enabled, mode=self.mode, state=self.state,
            since=self.since, last_frame_age_s=self.frame_age(now), frames=self.frames,
            inspections=self.inspections, detail=self.detail,
        )  # fmt: skip

    def message(self, box_id: str, now: float) -> CameraStateMessage:
        return CameraStateMessage(
            box_id=box_id, camera_id=self.camera_id, camera_name=self.name, state=self.state, since=self.since,
            last_frame_age_s=self.frame_age(now), frames=self.frames, inspections=self.inspections,
            detail=self.detail, ts=now,
        )  # fmt: skip


def _settings(settings_json: str) -> tuple[str, str]:
    """(mode, source) of stored camera settings; a row that does not parse reads as continuous, no source."""
    try:
        settings = json.loads(settings_json)
        return str(settings.get("mode") or "continuous"), str(settings.get("source") or "")
    except (ValueError, AttributeError):
        return "continuous", ""


def _stamp(iso: str, fallback: float) -> float:
    try:
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return fallback


class CameraStates:
    """The latest picture of every catalog camera; `poll` refreshes it and says which cameras changed state
    (or appeared, or went away)."""

    def __init__(self, runtime_path: Path) -> None:
        self.runtime_path = runtime_path
        self.cameras: dict[int, CameraLive] = {}

    def poll(self, db: Database, now: float | None = None) -> set[int]:
        now = time.time() if now is None else now
        rows = db.execute(
            "SELECT id, name, enabled, settings, updated_at FROM cameras ORDER BY id"
        ).fetchall()
        found: dict[int, CameraLive] = {}
        for camera_id, name, enabled, settings_json, updated_at in rows:
            mode, source = _settings(settings_json)
            found[camera_id] = self._camera(camera_id, name, bool(enabled), mode, source, updated_at, now)
        changed = {
            i
            for i in found.keys() | self.cameras.keys()
            if _state(found.get(i)) != _state(self.cameras.get(i))
        }
        self.cameras = found
        return changed

    def _camera(
        self, camera_id: int, name: str, enabled: bool, mode: str, source: str, updated_at: str, now: float
    ) -> CameraLive:
        previous = self.cameras.get(camera_id)
        last_frame_at, frames, inspections, camera_since = None, 0, 0, None
        state: LineState
        if not enabled:
            state, detail, camera_since = "stopped", "", _stamp(updated_at, now)
        elif not source.strip():
            state, detail = "error", "no source set: the camera process does not run it"
        else:
            live = live_status(self.runtime_path, camera_id, now)
            published = live.published
            if published is not None:
                last_frame_at, frames, inspections = (
                    published.last_frame_at,
                    published.frames,
                    published.inspections,
                )
            if live.state == "offline":
                state, detail = "error", live.error or NO_CAMERA_PROCESS
                camera_since = published.updated_at if published is not None else None
            elif live.state in ("starting", "reconnecting"):
                state, detail = "reconnecting", live.error or "opening the source"
                camera_since = published.state_since if live.fresh and published is not None else None
            elif live.state in ("running", "stopped", "error"):
                state, detail = live.state, live.error or ""
                camera_since = published.state_since if published is not None else None
            else:  # a state this version does not know: say so rather than guess
                state, detail = "error", f"unknown camera state {live.state!r}"
        if previous is not None and previous.state == state:
            since = previous.since
        else:
            since = camera_since if camera_since else now
        return CameraLive(
            camera_id=camera_id, name=name, enabled=enabled, mode=mode, state=state, since=round(since, 3),
            last_frame_at=last_frame_at, frames=frames, inspections=inspections, detail=detail[:500],
        )  # fmt: skip


def _state(camera: CameraLive | None) -> tuple[str, str] | None:
    return None if camera is None else (camera.state, camera.name)


__all__ = ["POLL_S", "STATE_CODES", "CameraLive", "CameraStates"]
