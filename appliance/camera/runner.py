"""`appliance camera`: the camera process. It runs one CameraLoop thread per enabled camera, a shared model
pool, a trigger watcher and the event writer; its main thread follows the catalog (cameras added, changed,
started, stopped; models deployed) and publishes statuses and the heartbeat.

Threads and who waits on whom: camera loops wait only for frames and for their turn on a shared model; the
trigger watcher and the event writer are the only threads that touch the catalog for the cameras' sake,
so a busy catalog delays an event's row, never a frame.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

from appliance.camera.models import ModelPool
from appliance.camera.publish import CAMERAS_DIR, STATUS_INTERVAL_S, Publisher
from appliance.camera.shadow import CameraShadow, follow_shadows
from appliance.camera.spare_time import SpareTime
from appliance.camera.station import CameraLoop
from appliance.camera.writer import EventWriter
from appliance.config import Config
from appliance.db import Database, open_database
from appliance.redaction import redact_credentials
from appliance.stations.cameras import enabled_cameras
from appliance.stations.contracts import TriggerRow
from appliance.stations.schemas import CameraSettings
from appliance.stations.triggers import TRIGGER_TIMEOUT_S, get_trigger, insert_trigger, pending_triggers
from appliance.system.entry import run_service
from appliance.system.notify import notify, watchdog_interval_s
from appliance.system.processes import beat, heartbeat_path

logger = logging.getLogger(__name__)

CAMERAS_POLL_S = 0.5
MODEL_POLL_S = 1.0
TRIGGER_POLL_S = 0.01  # an indexed read of an empty result: a few microseconds, ~100 a second


class CameraProcess:
    """The camera process's state; `run` until `stop` is set (SIGTERM, or a test)."""

    def __init__(self, config: Config, *, db: Database | None = None) -> None:
        self.config = config
        self.db = db or open_database(config.db_path)
        self.models = ModelPool(config, self.db)
        self.writer = EventWriter(config)
        self.loops: dict[int, CameraLoop] = {}
        self.shadows: dict[int, CameraShadow] = {}  # camera id -> its candidate model (camera/shadow.py)
        self.spare_time = (
            SpareTime()
        )  # candidates pause while any camera judges a frame (camera/spare_time.py)
        self.stop = threading.Event()
        self._lock = threading.Lock()  # guards self.loops against the trigger watcher
        self._next_cameras = 0.0
        self._next_models = 0.0
        self._next_status = 0.0
        self._dispatched: set[int] = set()  # the watcher and request_trigger may both see a trigger
        self._trigger_thread = threading.Thread(
            target=self._watch_triggers, name="camera-triggers", daemon=True
        )

    # --- cameras ---------------------------------------------------------------------------------------

    def sync_cameras(self) -> None:
        wanted = {
            cid: (name, settings, revision)
            for cid, (name, settings, _stamp, revision) in enabled_cameras(self.db).items()
            if settings.source.strip()
        }
        with self._lock:
            for camera_id in [c for c in self.loops if c not in wanted]:
                logger.info("camera %s stopped", camera_id)
                self.loops.pop(camera_id).close()
            for camera_id, (name, settings, revision) in wanted.items():
                loop = self.loops.get(camera_id)
                if loop is not None and loop.judging == (settings, revision) and loop.name == name:
                    continue
                if loop is not None and loop.apply(name, settings, revision):
                    logger.info("camera %s settings applied", camera_id)
                    continue
                if loop is not None:
                    loop.close()
                shown = redact_credentials(settings.source)
                logger.info("camera %s (%s): %s %s", camera_id, name, settings.source_type, shown)
                self.loops[camera_id] = self._new_loop(camera_id, name, settings, revision).start()

    def _new_loop(
        self, camera_id: int, name: str, settings: CameraSettings, revision: int | None = None
    ) -> CameraLoop:
        return CameraLoop(
            camera_id,
            name,
            settings,
            self.models,
            self.writer,
            Publisher(self.config.runtime_path, camera_id),
            revision=revision,
            spare_time=self.spare_time,
        )

    def refresh_models(self) -> None:
        with self._lock:
            cameras = {
                cid: (loop.settings.model_id, loop.settings.precision, loop.settings.engine)
                for cid, loop in self.loops.items()
            }
        self.models.refresh(cameras)
        self.shadows = follow_shadows(self.config, self.db, self.shadows, self.loops, self.spare_time)

    # --- triggers --------------------------------------------------------------------------------------

    def request_trigger(self, camera_id: int, source: str) -> int:
        """For trigger sources living in this process: the row, then straight to the camera's loop."""
        trigger_id = insert_trigger(self.db, camera_id, source)
        self._dispatch([get_trigger(self.db, camera_id, trigger_id)])
        return trigger_id

    def _watch_triggers(self) -> None:
        db = open_database(self.config.db_path)
        cursor = 0
        try:
            while not self.stop.is_set():
                try:
                    found = pending_triggers(db, cursor)
                except Exception:
                    logger.exception("reading trigger requests failed")
                    self.stop.wait(0.5)
                    continue
                if found:
                    cursor = found[-1].id
                    self._dispatch(found)
                self.stop.wait(TRIGGER_POLL_S)
        finally:
            db.conn.close()

    def _dispatch(self, found: list[TriggerRow]) -> None:
        now = time.monotonic()
        with self._lock:
            for trigger in found:
                if trigger.id in self._dispatched:
                    continue
                self._dispatched.add(trigger.id)
                loop = self.loops.get(trigger.camera_id)
                if now - trigger.requested_mono > TRIGGER_TIMEOUT_S:
                    self.writer.expire(trigger.id, "the camera process was not running when it was requested")
                elif loop is None:
                    self.writer.expire(trigger.id, "the camera is not running (stopped or without a source)")
                else:
                    loop.add_trigger(trigger)
            if len(self._dispatched) > 10_000:
                self._dispatched = set(sorted(self._dispatched)[-1000:])

    # --- status ----------------------------------------------------------------------------------------

    def write_status(self) -> None:
        self._next_status = time.monotonic() + STATUS_INTERVAL_S
        with self._lock:
            loops = list(self.loops.values())
        running = 0
        for loop in loops:
            status = loop.status()
            running += status.state == "running"
            loop.publisher.publish_status(status)
        stats = self.writer.stats
        doing = f"{running}/{len(loops)} cameras running, {stats.written} events written"
        if stats.events_dropped or stats.snapshots_dropped:
            doing += f" ({stats.events_dropped} dropped, {stats.snapshots_dropped} without snapshot)"
        try:
            beat(self.config.runtime_path, "camera", doing, warning=self.writer.storage_note())
        except OSError as exc:  # the runtime folder on a full data disk (development): inspections go on
            logger.debug("could not write the camera heartbeat: %s", exc)
        notify(f"STATUS={doing}")

    # --- loop ------------------------------------------------------------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_cameras:
            self._next_cameras = now + CAMERAS_POLL_S
            self.sync_cameras()
        if now >= self._next_models:
            self._next_models = now + MODEL_POLL_S
            self.refresh_models()
        if now >= self._next_status:
            self.write_status()
        self.stop.wait(0.05)

    def run(self) -> int:
        # Runtime files of cameras from an earlier run describe nothing that runs now.
        shutil.rmtree(self.config.runtime_path / CAMERAS_DIR, ignore_errors=True)
        self.writer.start()
        self._trigger_thread.start()
        notify("READY=1")
        logger.info(
            "camera process ready: it serves every enabled camera of the catalog (pid %s)", os.getpid()
        )
        watchdog = watchdog_interval_s()
        next_ping = 0.0
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception:
                    # The catalog was busy or a file write failed: say so and go on.
                    logger.exception("camera process loop error")
                    self.stop.wait(0.5)
                if watchdog and time.monotonic() >= next_ping:
                    notify("WATCHDOG=1")
                    next_ping = time.monotonic() + watchdog
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            loops, self.loops = list(self.loops.values()), {}
        for loop in loops:
            loop.close()
        for shadow in self.shadows.values():
            shadow.close()
        self.writer.close()
        self.models.close()
        self._trigger_thread.join(2)
        try:
            heartbeat_path(self.config.runtime_path, "camera").unlink(missing_ok=True)
        except OSError:
            logger.warning("could not remove the camera heartbeat", exc_info=True)


def run_camera(config: Config) -> int:
    return run_service(config, "the camera", lambda db: CameraProcess(config, db=db))


__all__ = ["CameraProcess", "run_camera"]
