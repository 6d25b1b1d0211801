"""MQTT output (paho-mqtt, 3.1.1 or 5, TLS and username/password optional).

Topics (docs/outputs.md): `<prefix>/<box_id>/status` (retained; last will `offline`),
`<prefix>/<box_id>/cameras/<camera_id>/events` (QoS 1, one message per event, in event order), and
`<prefix>/<box_id>/cameras/<camera_id>/trigger` (subscribed: any message asks for one inspection).

Each connection is a fresh paho client that does not reconnect by itself: after a drop, the messages it had
in flight are forgotten and the sender sends them again from the outbox (at least once, in order, never a
stale queue replayed behind newer messages).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from appliance.db import Database, open_database
from appliance.errors import AppError
from appliance.outputs import box_status
from appliance.outputs.camera_live import CameraLive
from appliance.outputs.connector import DeliveryError, TriggerRequester
from appliance.outputs.contracts import ConnectorState, OutboxItem
from appliance.outputs.schemas import MqttSettings

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 2.0  # a broker back after an outage is found within this
STATUS_EVERY_S = 30.0
MAX_INFLIGHT = 200
_encoder = msgspec.json.Encoder()


def topics(settings: MqttSettings, box_id: str) -> tuple[str, str, str, str]:
    """(status topic, events and camera state topic templates with {camera_id}, trigger subscription)."""
    base = f"{settings.topic_prefix}/{box_id}"
    return (
        f"{base}/status",
        f"{base}/cameras/{{camera_id}}/events",
        f"{base}/cameras/{{camera_id}}/state",
        f"{base}/cameras/+/trigger",
    )


def new_client(settings: MqttSettings, client_id: str, *, reconnect: bool = False) -> mqtt.Client:
    """A paho client with the output's protocol, credentials and TLS (also used by the test route and the fleet,
    whose client lets paho reconnect by itself: `reconnect`)."""
    protocol = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
        reconnect_on_failure=reconnect,
    )
    client.connect_timeout = CONNECT_TIMEOUT_S
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file or None)
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    return client


class MqttConnector:
    def __init__(
        self,
        output_id: int,
        settings: MqttSettings,
        box_id: str,
        db_path: Path,
        data_path: Path,
        triggers: TriggerRequester,
        on_ready: Callable[[], None],
    ) -> None:
        self.output_id = output_id
        self.settings = settings
        self.box_id = box_id
        self.db_path = db_path
        self.data_path = data_path
        self.triggers = triggers
        self.on_ready = on_ready
        self.state = ConnectorState(detail="connecting")
        self.status_topic, self.events_topic, self.state_topic, self.trigger_topic = topics(settings, box_id)
        self._cameras: dict[int, CameraLive] = {}  # the latest picture from the outputs process
        self._trigger_re = re.compile(
            re.escape(f"{settings.topic_prefix}/{box_id}/cameras/") + r"(\d{1,18})/trigger"
        )
        self.client_id = settings.client_id or f"appliance-{box_id}-{output_id}"
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._dropped = threading.Event()
        self._acks = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outputs-mqtt-{output_id}", daemon=True)

    # --- connection ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        db = open_database(self.db_path)
        delay = RECONNECT_FIRST_S
        try:
            while not self._stop.is_set():
                if self._connect_once(db):
                    delay = RECONNECT_FIRST_S
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            db.conn.close()

    def _connect_once(self, db: Database) -> bool:
        """One connection, from connect to drop; True when it was established."""
        client = new_client(self.settings, self.client_id)
        offline = _encoder.encode(box_status.offline_status(self.box_id))
        client.will_set(self.status_topic, offline, qos=1, retain=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._dropped.clear()
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            self._failed(f"cannot connect to {where}: {exc}")
            return False
        client.loop_start()
        established = False
        try:
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while not self._connected.is_set() and not self._dropped.is_set():
                if self._stop.wait(0.02) or time.monotonic() > deadline:
                    break
            if not self._connected.is_set():
                if not self.state.last_error or self.state.connected:
                    self._failed(f"no CONNACK from {where}")
                return False
            established = True
            self._client = client
            self.state.connected, self.state.connected_at = True, time.time()
            self.state.detail = f"connected to {where}"
            if self.settings.triggers:
                client.subscribe(self.trigger_topic, qos=1)
            self._publish_status(client, db)
            self._publish_states(client, set(self._cameras))
            next_status = time.monotonic() + STATUS_EVERY_S
            self.on_ready()
            while not self._stop.is_set() and not self._dropped.is_set():
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_EVERY_S
                    self._publish_status(client, db)
                    self._publish_states(client, set(self._cameras))
                self._stop.wait(0.2)
            if self._stop.is_set() and not self._dropped.is_set():
                # A clean stop: say offline ourselves (the broker sends the will only when we die).
                client.publish(self.status_topic, offline, qos=1, retain=True).wait_for_publish(2)
                client.disconnect()
            return True
        finally:
            self._connected.clear()
            self._client = None
            self.state.connected = False
            with self._acks:
                self._acks.notify_all()
            client.disconnect()
            client.loop_stop()
            if established and not self._stop.is_set():
                self._failed(f"connection to {where} lost")

    def _publish_status(self, client: mqtt.Client, db: Database) -> None:
        try:
            status = box_status.online_status(db, self.box_id, self.data_path, list(self._cameras.values()))
        except Exception:
            logger.exception("output %s: reading the box status failed", self.output_id)
            return
        client.publish(self.status_topic, _encoder.encode(status), qos=1, retain=True)

    def _publish_states(self, client: mqtt.Client, camera_ids: set[int], gone: Iterable[int] = ()) -> None:
        """Each camera's retained state message; an empty retained message clears a deleted camera's."""
        cameras, now = self._cameras, time.time()
        for camera_id in sorted(camera_ids):
            camera = cameras.get(camera_id)
            if camera is not None:
                payload = _encoder.encode(camera.message(self.box_id, now))
                client.publish(self.state_topic.format(camera_id=camera_id), payload, qos=1, retain=True)
        for camera_id in sorted(gone):
            client.publish(self.state_topic.format(camera_id=camera_id), b"", qos=1, retain=True)

    def cameras_changed(self, cameras: dict[int, CameraLive], changed: set[int]) -> None:
        gone = set(self._cameras) - set(cameras)
        self._cameras = cameras
        client = self._client
        if client is not None and self._connected.is_set() and (changed or gone):
            self._publish_states(client, changed & set(cameras), gone)

    def _failed(self, message: str) -> None:
        self.state.last_error = message[:500]
        self.state.last_error_at = time.time()
        self.state.detail = message[:500]
        logger.warning("output %s: %s", self.output_id, message)

    # --- paho callbacks (its network thread) --------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self._failed(f"broker refused the connection: {reason_code}")
            self._dropped.set()
            return
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._dropped.set()
        with self._acks:
            self._acks.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._acks:
            self._acks.notify_all()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        match = self._trigger_re.fullmatch(message.topic)
        if match is None:
            return
        camera_id = int(match.group(1))
        try:
            future = self.triggers.submit(camera_id, "mqtt")
        except AppError as exc:
            logger.warning(
                "output %s: MQTT trigger for camera %s refused: %s", self.output_id, camera_id, exc
            )
            return
        self.state.triggers += 1
        future.add_done_callback(lambda f: _log_trigger(self.output_id, camera_id, f))

    # --- delivery ------------------------------------------------------------------------------------

    def deliver(self, items: list[OutboxItem]) -> int:
        client = self._client
        if client is None or not self._connected.is_set():
            raise DeliveryError(f"not connected to {self.settings.host}:{self.settings.port}")
        infos = []
        for item in items:
            topic = self.events_topic.format(camera_id=item.camera_id)
            info = client.publish(topic, item.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            infos.append(info)
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        with self._acks:
            while not all(i.is_published() for i in infos):
                if self._dropped.is_set() or time.monotonic() > deadline:
                    break
                self._acks.wait(0.1)
        done = 0
        for info in infos:
            if not info.is_published():
                break
            done += 1
        if done == 0:
            raise DeliveryError("the broker acknowledged none of the messages (connection lost or timed out)")
        self.state.delivered_session += done
        return done

    def persist(self, db: Database) -> None:
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _log_trigger(output_id: int, camera_id: int, future) -> None:  # type: ignore[no-untyped-def]
    exc = future.exception()
    if exc is not None:
        logger.warning("output %s: MQTT trigger for camera %s refused: %s", output_id, camera_id, exc)
