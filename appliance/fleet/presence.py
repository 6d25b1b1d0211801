"""The box on the fleet's broker: its retained `<prefix>/<box_id>/fleet` status (with a last will saying offline),
the other boxes' statuses gathered into the view file the Fleet page reads, and wake-up notifications.

Topics (docs/fleet.md):

    <prefix>/<box_id>/fleet     retained, QoS 1: this box (appliance.fleet-status/1); the will: state offline
    <prefix>/<box_id>/status    retained: the line outputs' status (appliance.status/1), read when present
    <prefix>/fleet/notify       QoS 1, not retained: a rollout, an action or a report was written to the store

paho's own network thread reconnects (1-10 s apart) while the broker is away; nothing the fleet does waits for
the broker: rollouts go on through the store, and the Fleet page shows when the view was last fresh.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance import __version__
from appliance.camera.publish import STATUS_STALE_S, MalformedStatus, camera_dir, read_status
from appliance.config import Config
from appliance.db import Database
from appliance.fleet.contracts import (
    NOTIFY_SCHEMA,
    FleetCamera,
    FleetCounts,
    FleetDisk,
    FleetModel,
    FleetNotify,
    FleetRollout,
    FleetStatus,
)
from appliance.fleet.view import FleetView, ViewEntry, broker_text, write_view
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.outputs.schemas import MqttSettings

logger = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024  # a status larger than this is not a box's: ignored
MAX_BOXES = 10_000
STATUS_EVERY_S = 15.0
VIEW_EVERY_S = 0.5
NOTIFY_TIMEOUT_S = 3.0
_encoder = msgspec.json.Encoder()
MB = 1024 * 1024


def broker_settings(config: Config, box: str, role: str) -> MqttSettings:
    password = None
    if config.fleet_broker_password_file:
        password = Path(config.fleet_broker_password_file).read_text().strip()[:256]
    return MqttSettings(
        host=config.fleet_broker_host,
        port=config.fleet_broker_port,
        tls=config.fleet_broker_tls,
        ca_file=config.fleet_broker_ca_file,
        username=config.fleet_broker_username,
        password=password,
        topic_prefix=config.fleet_topic_prefix,
        client_id=f"appliance-fleet-{role}-{box}"[:128],
    )


def console_url(config: Config) -> str:
    if config.fleet_console_url:
        return config.fleet_console_url
    scheme = "https" if config.tls_cert else "http"
    host = (
        config.host
        if config.host not in ("0.0.0.0", "::", "127.0.0.1", "localhost")
        else socket.gethostname()
    )
    return f"{scheme}://{host}:{config.port}"


# --- this box's status -------------------------------------------------------------------------------------


def _midnight() -> float:
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


def box_status(
    db: Database, config: Config, since: float, rollout: FleetRollout | None, key_id: str
) -> FleetStatus:
    """What this box announces: model, cameras and their state, today's OK/NG, disk, version, rollout."""
    model = None
    row = db.execute(
        """SELECT m.id, m.name, f.name, f.version FROM models m LEFT JOIN fleet_models f ON f.model_id = m.id
           WHERE m.deployed = 1 LIMIT 1"""
    ).fetchone()
    if row:
        model = FleetModel(id=row[0], name=row[1], bundle=row[2], version=row[3])
    cameras = []
    now = time.time()
    for camera_id, name, enabled in db.execute("SELECT id, name, enabled FROM cameras ORDER BY id LIMIT 200"):
        state, model_id = "stopped", None
        if enabled:
            try:
                status = read_status(camera_dir(config.runtime_path, camera_id))
            except MalformedStatus:
                status = None
            if status is None or now - status.updated_at > STATUS_STALE_S:
                state = "offline"
            else:
                state, model_id = status.state, status.model_id
        cameras.append(FleetCamera(id=camera_id, name=name, state=state, model_id=model_id))
    counts = db.execute(
        "SELECT SUM(verdict = 'ok'), SUM(verdict = 'ng') FROM inspection_events WHERE ts >= ?", [_midnight()]
    ).fetchone()
    usage = shutil.disk_usage(config.data_path)
    pending = db.execute("SELECT COUNT(*) FROM fleet_uploads WHERE status = 'pending'").fetchone()[0]
    return FleetStatus(
        box_id=configured_box_id(config),
        state="online",
        since=since,
        ts=now,
        version=__version__,
        console_url=console_url(config),
        tags=list(config.fleet_tags),
        key_id=key_id,
        model=model,
        cameras=cameras,
        today=FleetCounts(ok=int(counts[0] or 0), ng=int(counts[1] or 0)),
        disk=FleetDisk(free_mb=usage.free // MB, total_mb=usage.total // MB),
        rollout=rollout,
        uploads_pending=int(pending),
    )


# --- the broker connection -----------------------------------------------------------------------------------


class Presence:
    """One paho client: this box's retained status, the other boxes' into the view file, notifications."""

    def __init__(self, config: Config, wake: threading.Event) -> None:
        self.config = config
        self.box = configured_box_id(config)
        self.prefix = config.fleet_topic_prefix
        self.wake = wake
        self.status_topic = f"{self.prefix}/{self.box}/fleet"
        self.notify_topic = f"{self.prefix}/fleet/notify"
        self._topic = re.compile(re.escape(self.prefix) + r"/([A-Za-z0-9_.-]{1,64})/(fleet|status)")
        self.view = FleetView(pid=os.getpid(), updated_at=time.time(), broker=broker_text(config))
        self.connected_since: float | None = None
        self._lock = threading.Lock()
        self._dirty = True
        self._last_view = 0.0
        self._status: bytes | None = None
        self.notified: list[FleetNotify] = []
        self.client: Any = None

    def start(self) -> None:
        from appliance.outputs.mqtt import new_client

        settings = broker_settings(self.config, self.box, "box")
        client = new_client(settings, settings.client_id, reconnect=True)
        client.will_set(
            self.status_topic, _encoder.encode(FleetStatus(box_id=self.box, state="offline")), 1, True
        )
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        client.connect_async(self.config.fleet_broker_host, self.config.fleet_broker_port, keepalive=30)
        client.loop_start()

    def stop(self) -> None:
        if self.client is None:
            return
        if self.view.connected:
            offline = FleetStatus(box_id=self.box, state="offline", ts=time.time())
            info = self.client.publish(self.status_topic, _encoder.encode(offline), qos=1, retain=True)
            info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_status(self, status: FleetStatus) -> None:
        data = _encoder.encode(status)
        self._status = data
        if self.client is not None and self.view.connected:
            self.client.publish(self.status_topic, data, qos=1, retain=True)
        self._record(self.box, "fleet", msgspec.json.decode(data), retained=False)

    # paho's network thread -----------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if reason_code.is_failure:
                self.view.error = f"the broker refused the connection: {reason_code}"
                self.view.connected = False
                self._dirty = True
                return
            self.view.connected, self.view.error = True, None
            self.connected_since = time.time()
            self._dirty = True
        client.subscribe(
            [(f"{self.prefix}/+/fleet", 1), (f"{self.prefix}/+/status", 1), (self.notify_topic, 1)]
        )
        if self._status is not None:
            client.publish(self.status_topic, self._status, qos=1, retain=True)
        self.wake.set()  # publish a fresh status now

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.view.connected = False
            self.view.error = f"connection to the broker lost ({reason_code}); reconnecting"
            self._dirty = True

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        if len(message.payload) > MAX_MESSAGE:
            return
        if message.topic == self.notify_topic:
            try:
                note = msgspec.json.decode(message.payload, type=FleetNotify)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return
            if note.schema == NOTIFY_SCHEMA:  # this box's own web process writes rollouts too
                self.wake.set()
            return
        match = self._topic.fullmatch(message.topic)
        if match is None:
            return
        try:
            payload = msgspec.json.decode(message.payload)
        except msgspec.DecodeError:
            return
        if isinstance(payload, dict):
            self._record(match.group(1), match.group(2), payload, retained=bool(message.retain))

    def _record(self, box: str, kind: str, payload: dict[str, Any], retained: bool) -> None:
        now = time.time()
        with self._lock:
            entry = self.view.boxes.get(box)
            if entry is None:
                if len(self.view.boxes) >= MAX_BOXES:
                    return
                entry = self.view.boxes[box] = ViewEntry(box_id=box)
            online = payload.get("state") == "online"
            if kind == "fleet":
                entry.fleet = payload
            else:
                entry.line_status = payload
                if entry.fleet is not None:  # the fleet message says more; the line status only fills in
                    self._dirty = True
                    return
            ts = payload.get("ts") if isinstance(payload.get("ts"), int | float) else None
            if online:
                since = payload.get("since")
                entry.since = (
                    since if isinstance(since, int | float) else (entry.since if entry.online else now)
                )
                entry.last_seen = ts or now
            elif entry.online or entry.since is None:
                entry.since = None if retained else (ts or now)
            entry.online = online
            self._dirty = True

    def write_view(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not (self._dirty or force) or now - self._last_view < VIEW_EVERY_S and not force:
                return
            self._dirty = False
            self._last_view = now
            self.view.updated_at = time.time()
            snapshot = msgspec.json.decode(msgspec.json.encode(self.view), type=FleetView)
        write_view(self.config, snapshot)


def notify(config: Config, kind: str, rollout_id: str) -> bool:
    """Tell the fleet's boxes to read the store now (one short connection; the boxes poll anyway)."""
    if not config.fleet_broker_host:
        return False
    from appliance.outputs.mqtt import new_client

    box = configured_box_id(config)
    settings = broker_settings(config, box, f"notify-{os.getpid()}")
    note = FleetNotify(kind=kind, rollout_id=rollout_id, box_id=box, at=time.time())  # type: ignore[arg-type]
    client = new_client(settings, settings.client_id)
    client.connect_timeout = NOTIFY_TIMEOUT_S
    try:
        client.connect(config.fleet_broker_host, config.fleet_broker_port, keepalive=10)
        client.loop_start()
        info = client.publish(f"{config.fleet_topic_prefix}/fleet/notify", _encoder.encode(note), qos=1)
        info.wait_for_publish(NOTIFY_TIMEOUT_S)
        return info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("fleet notification not sent (the boxes find it at their next poll): %s", exc)
        return False
    finally:
        client.disconnect()
        client.loop_stop()
