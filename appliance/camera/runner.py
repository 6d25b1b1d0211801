"""`appliance camera`: capture, run the deployed model on the newest frame, publish frame + detections + timings.

Threads: the capture thread (capture.FrameSource) keeps the newest frame; this loop takes it, infers,
encodes and publishes; a loader thread opens a newly deployed model while the stream goes on with the old
one (or without detections), and the swap happens between two frames. Settings are re-read when the
catalog row's updated_at changes, so a PUT /camera applies without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, cast

import cv2
import msgspec

from appliance.camera import service
from appliance.camera.capture import Frame, FrameSource, SourceSpec
from appliance.camera.contracts import FrameDetection, FrameMeta
from appliance.camera.publish import (
    STATUS_INTERVAL_S,
    PublishedFrame,
    Publisher,
    RateMeter,
    RollingStats,
)
from appliance.camera.schemas import CameraSettings, CameraState, CameraStatus, StageTiming
from appliance.config import Config
from appliance.db import Database, migrate, open_database
from appliance.models.loading import deployed_model, load_detector_for_model, loadable_artifacts
from appliance.storage import ImageStore
from appliance.system.notify import notify, stop_on_signals, watchdog_interval_s
from appliance.system.processes import Heartbeat, heartbeat_path, process_started_at, write_heartbeat

logger = logging.getLogger(__name__)

SETTINGS_POLL_S = 0.5
MODEL_POLL_S = 1.0
MODEL_RETRY_S = 30.0


def model_key(config: Config, row: dict[str, Any] | None, precision: str) -> tuple[Any, ...] | None:
    """Identity of what would be loaded: the deployed row, the precision asked for, its exports and their mtimes.

    A new export of the deployed model (say a TensorRT engine built after the ONNX one) changes the key too.
    """
    if row is None:
        return None
    try:
        exports = tuple(
            sorted((a["file"], a["path"].stat().st_mtime_ns) for a in loadable_artifacts(config, row["id"]))
        )
    except OSError as exc:
        return (row["id"], precision, f"unreadable: {exc}")
    return (row["id"], precision, exports)


def load_detector(config: Config, db: Database, row: dict[str, Any], precision: str) -> Any:
    """The shared pipeline's Detector for a models row (ONNX Runtime here, TensorRT on the box)."""
    return load_detector_for_model(config, db, row, precision=None if precision == "auto" else precision)


class CameraRunner:
    """The camera process's main loop; `stop` ends it (SIGTERM, or a test)."""

    def __init__(self, config: Config, *, db: Database | None = None) -> None:
        self.config = config
        self.db = db or open_database(config.db_path)
        self.publisher = Publisher(config.runtime_path)
        self.store = ImageStore(config)
        self.stop = threading.Event()
        self.settings = CameraSettings()
        self.settings_stamp: str | None = "unread"
        self.source: FrameSource | None = None
        self.stats = RollingStats()
        self.rate = RateMeter()
        self.published = 0
        self.last_seq = 0
        self.last_frame_size = (0, 0)
        # model state
        self.detector: Any = None
        self.model_row: dict[str, Any] | None = None
        self.model_note = "no model deployed"
        self._wanted_key: tuple[Any, ...] | None = None
        self._loading: threading.Thread | None = None
        self._loaded: tuple[tuple[Any, ...] | None, Any, dict[str, Any] | None, str] | None = None
        self._load_failed_at = 0.0
        self._next_model_poll = 0.0
        self._next_settings_poll = 0.0
        self._next_status = 0.0
        # auto-capture
        self.auto_captured = 0
        self._last_auto_capture = 0.0
        self._capturing: threading.Thread | None = None
        self.error: str | None = None

    # --- settings and model ----------------------------------------------------------------------

    def poll_settings(self, now: float) -> None:
        if now < self._next_settings_poll:
            return
        self._next_settings_poll = now + SETTINGS_POLL_S
        stamp = service.settings_stamp(self.db)
        if stamp == self.settings_stamp:
            return
        self.settings, self.settings_stamp = service.settings_row(self.db)
        logger.info(
            "camera settings (%s): %s %s, enabled=%s",
            stamp,
            self.settings.source_type,
            self.settings.source,
            self.settings.enabled,
        )
        spec = self._spec()
        if self.source is not None and (spec is None or self.source.spec != spec):
            self._close_source()

    def _spec(self) -> SourceSpec | None:
        s = self.settings
        if not s.enabled or not s.source.strip():
            return None
        return SourceSpec(
            s.source_type, s.source.strip(), s.width, s.height, s.fps, s.open_timeout_ms, s.read_timeout_ms
        )

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close(timeout=1.0)
            self.source = None
            self.publisher.clear_frame()

    def poll_model(self, now: float) -> None:
        if self._loaded is not None:  # a loader thread finished: swap between two frames
            key, detector, row, note = self._loaded
            self._loaded = None
            old = self.detector
            if key == self._wanted_key:
                self.detector, self.model_row, self.model_note = detector, row, note
                if old is not None and old is not detector:
                    old.close()
            elif detector is not None:
                detector.close()
        if now < self._next_model_poll or (self._loading and self._loading.is_alive()):
            return
        self._next_model_poll = now + MODEL_POLL_S
        row = deployed_model(self.db)
        key = model_key(self.config, row, self.settings.precision)
        if key == self._wanted_key and (key is None or self.detector is not None):
            return
        if key is None:
            if self.detector is not None:
                self.detector.close()
            self.detector, self.model_row, self.model_note = None, None, "no model deployed"
            self._wanted_key = None
            return
        if key == self._wanted_key and now - self._load_failed_at < MODEL_RETRY_S:
            return
        assert row is not None
        self._wanted_key = key
        self.model_note = f"loading model {row['id']}"
        precision = self.settings.precision
        self._loading = threading.Thread(
            target=self._load, args=(key, row, precision), name="camera-model-loader", daemon=True
        )
        self._loading.start()

    def _load(self, key: tuple[Any, ...], row: dict[str, Any], precision: str) -> None:
        db = open_database(self.config.db_path)
        try:
            detector = load_detector(self.config, db, row, precision)
            note = f"model {row['id']} ({getattr(detector, 'key', 'onnxruntime')})"
            logger.info("camera switched to %s", note)
            self._loaded = (key, detector, row, note)
        except Exception as exc:  # a broken export must not stop the stream
            logger.exception("camera could not load model %s", row.get("id"))
            self._load_failed_at = time.monotonic()
            self._loaded = (key, None, None, f"model {row['id']} could not be loaded: {exc}")
        finally:
            db.conn.close()

    # --- frames ----------------------------------------------------------------------------------

    def step(self) -> bool:
        """One pass of the loop; True when a frame was published."""
        now = time.monotonic()
        self.poll_settings(now)
        self.poll_model(now)
        spec = self._spec()
        published = False
        if spec is None:
            self._close_source()
            self.stop.wait(0.1)
        else:
            if self.source is None:
                self.source = FrameSource(spec).start()
            waited = time.perf_counter()
            frame = self.source.latest(self.last_seq, timeout=0.2)
            if frame is not None:
                self.last_seq = frame.seq
                self.process(frame, wait_ms=(time.perf_counter() - waited) * 1000)
                published = True
                if self.settings.max_fps:
                    self.stop.wait(max(0.0, 1.0 / self.settings.max_fps - (time.monotonic() - now)))
        if time.monotonic() >= self._next_status:
            self.write_status()
        return published

    def process(self, frame: Frame, wait_ms: float = 0.0) -> None:
        s = self.settings
        # wait: how long the loop idled for a new frame (high when the source, not the model, is the limit).
        timings: dict[str, float] = {"wait": wait_ms, "capture": frame.capture_ms}
        detections: list[FrameDetection] = []
        detector = self.detector
        if detector is not None:
            try:
                result = detector.detect(frame.image, conf=s.confidence, iou=s.iou)
            except Exception:
                logger.exception("inference failed; streaming without detections")
                self.model_note = "inference failed; see the camera log"
            else:
                detections = result.detections
                timings["preprocess"] = result.timings.get("preprocess_ms", 0.0)
                timings["inference"] = result.timings.get("inference_ms", 0.0)
                timings["postprocess"] = result.timings.get("postprocess_ms", 0.0)
        t0 = time.perf_counter()
        ok, encoded = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            logger.warning("JPEG encoding failed for frame %s", frame.seq)
            return
        jpeg = encoded.tobytes()
        timings["encode"] = (time.perf_counter() - t0) * 1000
        timings["frame_age"] = (time.monotonic() - frame.captured_at) * 1000
        height, width = frame.image.shape[:2]
        self.last_frame_size = (width, height)
        self.published += 1
        self.rate.tick()
        meta = FrameMeta(
            seq=self.published,
            source_seq=frame.seq,
            ts=time.time(),
            width=width,
            height=height,
            detections=detections,
            timings={k: round(v, 2) for k, v in timings.items()},
            model_id=self.model_row["id"] if self.model_row and detector is not None else None,
            fps=round(self.rate.rate(), 2),
            dropped=self.source.dropped if self.source else 0,
        )
        self.publisher.publish_frame(jpeg, meta)
        self.stats.add(timings)
        if detector is not None and s.auto_capture:
            self.maybe_auto_capture(PublishedFrame(self.published, jpeg, meta, b""), detections)

    # --- auto-capture ----------------------------------------------------------------------------

    def maybe_auto_capture(self, frame: PublishedFrame, detections: list[FrameDetection]) -> None:
        s = self.settings
        now = time.monotonic()
        if now - self._last_auto_capture < s.auto_capture_interval_s:
            return
        if self._capturing is not None and self._capturing.is_alive():
            return
        if detections:
            if max(d.confidence for d in detections) >= s.auto_capture_below:
                return
        elif not s.auto_capture_empty:
            return
        if s.auto_capture_dataset_id is None or s.auto_capture_user_id is None:
            return
        self._last_auto_capture = now
        self._capturing = threading.Thread(
            target=self._auto_capture,
            args=(frame, s.auto_capture_dataset_id, s.auto_capture_user_id),
            name="camera-auto-capture",
            daemon=True,
        )
        self._capturing.start()

    def _auto_capture(self, frame: PublishedFrame, dataset_id: int, user_id: int) -> None:
        db = open_database(self.config.db_path)
        try:
            user = service.user_for_auto_capture(db, user_id)
            result = service.save_frame(
                db, self.store, self.config, dataset_id, user, frame, name_prefix="auto"
            )
            if not result.duplicate:
                self.auto_captured += 1
        except Exception:
            logger.exception("auto-capture into dataset %s failed", dataset_id)
        finally:
            db.conn.close()

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> CameraStatus:
        s = self.settings
        source = self.source
        state: CameraState
        error: str | None
        if self._spec() is None:
            state, error = "stopped", None
        elif source is None:
            state, error = "starting", None
        else:
            state, error = cast(CameraState, source.state), source.error
        width, height = self.last_frame_size
        loaded = self.model_row if self.model_row and self.detector is not None else None
        return CameraStatus(
            state=state,
            source_type=s.source_type,
            source=s.source,
            fps=round(self.rate.rate(), 2),
            source_fps=round(source.source_fps(), 2) if source else 0.0,
            frames=self.published,
            dropped=source.dropped if source else 0,
            reconnects=source.reconnects if source else 0,
            model_id=loaded["id"] if loaded else None,
            model_name=loaded.get("name") if loaded else None,
            model_note=self.model_note,
            error=error,
            width=width,
            height=height,
            timings={k: StageTiming(**v) for k, v in self.stats.summary().items()},
            auto_captured=self.auto_captured,
            pid=os.getpid(),
            updated_at=time.time(),
        )

    def write_status(self) -> None:
        self._next_status = time.monotonic() + STATUS_INTERVAL_S
        status = self.status()
        self.publisher.publish_status(status)
        doing = f"{status.state}, {status.fps} fps" + (f", {status.model_note}" if status.model_note else "")
        write_heartbeat(
            self.config.runtime_path,
            Heartbeat(
                name="camera",
                pid=status.pid or os.getpid(),
                started_at=process_started_at(),
                updated_at=status.updated_at,
                doing=doing,
            ),
        )
        notify(f"STATUS={doing}")

    # --- loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        notify("READY=1")
        watchdog = watchdog_interval_s()
        next_ping = 0.0
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except Exception:
                    # The catalog was busy or a file write failed: say so and go on.
                    logger.exception("camera loop error")
                    self.stop.wait(0.5)
                if watchdog and time.monotonic() >= next_ping:
                    notify("WATCHDOG=1")
                    next_ping = time.monotonic() + watchdog
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self._close_source()
        if self.detector is not None:
            self.detector.close()
            self.detector = None
        status = msgspec.structs.replace(self.status(), state="stopped", fps=0.0)
        try:
            self.publisher.publish_status(status)
            heartbeat_path(self.config.runtime_path, "camera").unlink(missing_ok=True)
        except OSError:
            logger.warning("could not write the final camera status", exc_info=True)


def run_camera(config: Config) -> int:
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    config.runtime_path.mkdir(parents=True, exist_ok=True)
    runner = CameraRunner(config, db=db)

    stop_on_signals(runner.stop, "the camera")
    return runner.run()


__all__ = ["CameraRunner", "run_camera"]
