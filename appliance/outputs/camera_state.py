"""Per-camera values the servers (OPC UA, Modbus) expose, kept per output and persisted with each acknowledgement.

Counters count each event once: an event id at or below the camera's last one is a redelivery (the process
died between applying and acknowledging) and is skipped, so a restart neither loses nor doubles a count.
"""

from __future__ import annotations

import threading

import msgspec

from appliance.db import Database
from appliance.outputs.contracts import EventMessage, OutboxItem
from appliance.stations.contracts import WHOLE_FRAME

_decoder = msgspec.json.Decoder(EventMessage)
_encoder = msgspec.json.Encoder()


class CameraValues(msgspec.Struct, kw_only=True):
    camera_id: int
    name: str = ""
    events: int = 0
    ok: int = 0
    ng: int = 0
    last_event_id: int = 0
    last_ts: float = 0.0
    verdict: str = ""  # "" before the first event
    failing_rules: list[str] = msgspec.field(default_factory=list)
    counts: dict[str, int] = msgspec.field(default_factory=dict)  # whole frame, per class
    model_id: int | None = None
    trigger_id: int = 0  # of the latest triggered event


class ServerState:
    def __init__(self, output_id: int) -> None:
        self.output_id = output_id
        self.cameras: dict[int, CameraValues] = {}
        self.lock = threading.Lock()

    def load(self, db: Database) -> None:
        rows = db.execute(
            "SELECT camera_id, state FROM output_camera_state WHERE output_id = ?", [self.output_id]
        ).fetchall()
        with self.lock:
            for camera_id, state in rows:
                try:
                    self.cameras[camera_id] = msgspec.json.decode(state, type=CameraValues)
                except msgspec.DecodeError:
                    self.cameras[camera_id] = CameraValues(camera_id=camera_id)

    def camera(self, camera_id: int, name: str = "") -> CameraValues:
        values = self.cameras.get(camera_id)
        if values is None:
            values = self.cameras[camera_id] = CameraValues(camera_id=camera_id, name=name)
        elif name and values.name != name:
            values.name = name
        return values

    def apply(self, items: list[OutboxItem]) -> set[int]:
        """Fold the events into the per-camera values; returns the cameras that changed."""
        changed: set[int] = set()
        with self.lock:
            for item in items:
                event = _decoder.decode(item.payload)
                values = self.camera(event.camera_id, event.camera_name)
                if event.event_id <= values.last_event_id:
                    continue
                values.events += 1
                values.ok += event.verdict == "ok"
                values.ng += event.verdict == "ng"
                values.last_event_id = event.event_id
                values.last_ts = event.ts
                values.verdict = event.verdict
                values.failing_rules = list(event.failing_rules)
                values.counts = dict(event.counts.get(WHOLE_FRAME, {}))
                values.model_id = event.model_id
                if event.trigger_id is not None:
                    values.trigger_id = event.trigger_id
                changed.add(event.camera_id)
        return changed

    def persist(self, db: Database) -> None:
        """Inside the acknowledgement's transaction; every camera (at most a few dozen rows), so a rolled-back
        acknowledgement leaves nothing that a later one would not write."""
        with self.lock:
            rows = [
                (self.output_id, cid, _encoder.encode(v).decode()) for cid, v in sorted(self.cameras.items())
            ]
        if rows:
            db.conn.executemany(
                "INSERT INTO output_camera_state (output_id, camera_id, state) VALUES (?, ?, ?) "
                "ON CONFLICT (output_id, camera_id) DO UPDATE SET state = excluded.state",
                rows,
            )


def catalog_cameras(db: Database) -> dict[int, str]:
    return dict(db.execute("SELECT id, name FROM cameras ORDER BY id").fetchall())
