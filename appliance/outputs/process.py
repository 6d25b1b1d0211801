"""`appliance outputs`: the process that talks to the line. One sender thread per enabled output drains the
outbox; a watcher wakes them when the catalog changes (PRAGMA data_version, a read of shared memory every
2 ms); the main thread follows the outputs' configuration and writes the status file and the heartbeat.

Its own process (not a thread of the camera process): a broker, a webhook receiver or a PLC that hangs
cannot slow a camera loop, a crash in a network library cannot take inspections down, it restarts on its own,
and only it listens on the line's network (OPC UA, Modbus TCP) in its own sandbox.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from appliance.config import Config
from appliance.db import Database, open_database
from appliance.outputs import outbox, service, status_file
from appliance.outputs.camera_live import POLL_S, CameraStates
from appliance.outputs.connector import Connector, TriggerRequester
from appliance.outputs.contracts import ConnectorState, OutputsStatusFile
from appliance.outputs.schemas import MqttSettings, OpcuaSettings, WebhookSettings
from appliance.outputs.sender import Sender
from appliance.system.entry import run_service
from appliance.system.notify import notify, watchdog_interval_s
from appliance.system.processes import beat, heartbeat_path

logger = logging.getLogger(__name__)

CONFIG_POLL_S = 1.0
STATUS_EVERY_S = 1.0
CHANGE_POLL_S = 0.002
RETRY_FAILED_S = 30.0


class OutputsProcess:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.box_id = outbox.box_id(config)
        self.db = open_database(config.db_path)
        self.triggers = TriggerRequester(config.db_path)
        self.senders: dict[int, Sender] = {}
        self.cameras = CameraStates(config.runtime_path)
        # Outputs that could not start (a certificate that does not load, a bad address): retried when their
        # settings change or after RETRY_FAILED_S, their error shown in the status meanwhile.
        self.failed: dict[int, tuple[int, float, ConnectorState]] = {}
        self.stop = threading.Event()
        # monotonic time the status file was last refused and logged (the runtime folder on a full disk)
        self._status_failed_at: float | None = None
        self._watcher = threading.Thread(target=self._watch_changes, name="outputs-changes", daemon=True)

    def _connector(self, output: service.StoredOutput, sender: Sender) -> Connector:
        settings = output.settings
        # Each kind's library is imported only when an output of that kind exists.
        if isinstance(settings, MqttSettings):
            from appliance.outputs.mqtt import MqttConnector

            return MqttConnector(
                output.id, settings, self.box_id, self.config.db_path, self.config.data_path, self.triggers,
                on_ready=sender.ready.set,
            )  # fmt: skip
        if isinstance(settings, WebhookSettings):
            from appliance.outputs.webhook import WebhookConnector

            return WebhookConnector(output.id, settings)
        if isinstance(settings, OpcuaSettings):
            from appliance.outputs.opcua import OpcuaConnector

            return OpcuaConnector(output.id, settings, self.box_id, self.config.db_path, self.triggers)
        from appliance.outputs.modbus import ModbusConnector

        return ModbusConnector(output.id, settings, self.config.db_path, self.triggers)

    def sync_outputs(self) -> None:
        """Start new or changed enabled outputs, stop removed, disabled or changed ones."""
        wanted = {o.id: o for o in service.stored_outputs(self.db) if o.enabled}
        for output_id in [
            i for i, s in self.senders.items() if i not in wanted or wanted[i].revision != s.revision
        ]:
            logger.info("output %s stopped", output_id)
            self.senders.pop(output_id).close()
        self.failed = {i: f for i, f in self.failed.items() if i in wanted and wanted[i].revision == f[0]}
        for output_id, output in wanted.items():
            if output_id in self.senders:
                continue
            if output_id in self.failed and time.monotonic() < self.failed[output_id][1]:
                continue
            sender = Sender(output_id, output.revision, self.config.db_path)
            try:
                connector = self._connector(output, sender)
                connector.cameras_changed(dict(self.cameras.cameras), set(self.cameras.cameras))
                sender.start(connector)
            except Exception as exc:
                logger.exception("output %s (%s) could not start", output_id, output.name)
                state = ConnectorState(detail=f"could not start: {exc}"[:500], last_error=str(exc)[:500])
                state.last_error_at = time.time()
                self.failed[output_id] = (output.revision, time.monotonic() + RETRY_FAILED_S, state)
                continue
            self.failed.pop(output_id, None)
            logger.info("output %s (%s) started", output_id, output.name)
            self.senders[output_id] = sender

    def poll_cameras(self) -> None:
        """The cameras as the line sees them, handed to every output (the changed ones named)."""
        changed = self.cameras.poll(self.db)
        for sender in list(self.senders.values()):
            if sender.connector is not None:
                try:
                    sender.connector.cameras_changed(dict(self.cameras.cameras), changed)
                except Exception:
                    logger.exception("output %s: publishing the camera states failed", sender.output_id)

    def _watch_changes(self) -> None:
        db = open_database(self.config.db_path)
        try:
            last = _data_version(db)
            while not self.stop.wait(CHANGE_POLL_S):
                try:
                    version = _data_version(db)
                except Exception:
                    logger.exception("watching the catalog failed")
                    self.stop.wait(1.0)
                    continue
                if version != last:
                    last = version
                    for sender in list(self.senders.values()):
                        sender.wake.set()
        finally:
            db.conn.close()

    def write_status(self) -> None:
        states = {str(i): s.connector.state for i, s in self.senders.items() if s.connector is not None}
        states.update({str(i): state for i, (_, _, state) in self.failed.items()})
        connected = sum(1 for s in states.values() if s.connected)
        doing = f"{connected}/{len(states)} outputs connected"
        warning = "; ".join(note for sender in self.senders.values() if (note := sender.note()))
        try:
            status_file.write(
                self.config.runtime_path,
                OutputsStatusFile(pid=os.getpid(), updated_at=time.time(), outputs=states),
            )
            beat(self.config.runtime_path, "outputs", doing, warning=warning)
        except OSError as exc:  # the runtime folder on a full data disk (development): delivery goes on
            if self._status_failed_at is None or time.monotonic() - self._status_failed_at >= 60:
                self._status_failed_at = time.monotonic()
                logger.warning("could not write the outputs status (%s); retrying every second", exc)
        else:
            self._status_failed_at = None
        notify(f"STATUS={doing}")

    def run(self) -> int:
        self._watcher.start()
        notify("READY=1")
        watchdog = watchdog_interval_s()
        next_config = next_status = next_ping = next_cameras = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                try:
                    if now >= next_cameras:  # before the outputs start: they begin with the cameras known
                        next_cameras = now + POLL_S
                        self.poll_cameras()
                    if now >= next_config:
                        next_config = now + CONFIG_POLL_S
                        self.sync_outputs()
                    if now >= next_status:
                        next_status = now + STATUS_EVERY_S
                        self.write_status()
                except Exception:
                    logger.exception("outputs process loop error")
                if watchdog and now >= next_ping:
                    notify("WATCHDOG=1")
                    next_ping = now + watchdog
                self.stop.wait(0.1)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.stop.set()
        for sender in list(self.senders.values()):
            sender.close()
        self.senders.clear()
        self.triggers.close()
        self._watcher.join(2)
        for path in (
            status_file.status_path(self.config.runtime_path),
            heartbeat_path(self.config.runtime_path, "outputs"),
        ):
            path.unlink(missing_ok=True)
        self.db.conn.close()


def _data_version(db: Database) -> int:
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def run_outputs(config: Config) -> int:
    # The libraries' own INFO lines (every request, every session) would drown the journal.
    for name in ("asyncua", "pymodbus", "paho"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return run_service(config, "the outputs", lambda _db: OutputsProcess(config), keep_catalog=False)


__all__ = ["OutputsProcess", "run_outputs"]
