"""The frame source of a GigE Vision / USB3 Vision camera (`gige://<serial, device id or IP>`): the reader
thread opens the camera through Aravis, writes the box's GenICam settings (refused ones stop it with the
camera's range in the status), streams, converts each frame to BGR, and reopens the camera by its serial
when it goes away (unplugged, power cut, new IP address), writing the settings again.

Trigger modes:
- free run: like every other source, the newest frame wins (frames the loop does not take count as dropped
  and are not even converted);
- software: each trigger the box receives fires TriggerSoftware on the camera from a thread of its own, and
  the camera's answer is the frame the station inspects;
- hardware: the camera's input line fires it; every frame is one part, so frames queue (in order, bounded)
  instead of replacing each other, and one that falls off the queue is counted as not inspected.

A camera silent for longer than its read timeout in free run, or not answering a control read every
LIVENESS_S in the trigger modes, is lost: the status says so (state reconnecting, an incident with the
time) until it is back.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time

from appliance.camera.capture import BACKOFF_MAX_S, BACKOFF_START_S, Frame, FrameSource, SourceSpec
from appliance.camera.genicam import (
    CameraBusy,
    GenicamCamera,
    GenicamError,
    GenicamUnavailable,
    Grabbed,
    SettingsRefused,
    to_bgr,
)
from appliance.stations.genicam import (
    CameraFeatures,
    GenicamApplied,
    GenicamDevice,
    GenicamIncident,
    GenicamRanges,
    GenicamSettings,
    GenicamStatus,
    TransportCounters,
    parse_source,
)
from appliance.stations.triggers import TRIGGER_TIMEOUT_S

logger = logging.getLogger(__name__)

POP_TIMEOUT_S = 0.2
LIVENESS_S = 2.0  # trigger modes: a control read this often while no frame comes
BUSY_RETRY_S = 5.0  # another application controls the camera: ask again this often
REFUSED_RETRY_S = 10.0  # settings out of the camera's ranges: look again (another camera may be plugged in)
QUEUE_FRAMES = 16  # camera-triggered frames waiting for the model
INCIDENTS = 8


def _add(total: TransportCounters, more: TransportCounters) -> TransportCounters:
    return TransportCounters(
        **{f: getattr(total, f) + getattr(more, f) for f in TransportCounters.__struct_fields__}
    )


class GigeFrameSource(FrameSource):
    """FrameSource over an Aravis camera; `trigger_requested` fires TriggerSoftware in software mode."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.settings = spec.genicam or GenicamSettings()
        self.identifier = parse_source(spec.source)
        self.serial: str | None = None  # learnt at the first open: reconnects find the camera by it
        self.device: GenicamDevice | None = None
        self.applied: GenicamApplied | None = None
        self.ranges: GenicamRanges | None = None
        self.incidents: collections.deque[GenicamIncident] = collections.deque(maxlen=INCIDENTS)
        self._camera: GenicamCamera | None = None
        self._camera_lock = threading.Lock()  # the reader swaps the camera; the trigger thread uses it
        self._totals = TransportCounters()  # of the connections closed so far
        self._queued = self.settings.trigger != "free_run"
        self._queue: collections.deque[Frame] = collections.deque()
        self._features = CameraFeatures()
        self._fires: collections.deque[float] = collections.deque()  # monotonic times of the requests
        self._fire_cond = threading.Condition()
        self._trigger_thread = threading.Thread(
            target=self._fire_triggers, name="camera-trigger-fire", daemon=True
        )

    def start(self) -> GigeFrameSource:
        super().start()
        if self.settings.trigger == "software":
            self._trigger_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        with self._fire_cond:
            self._fire_cond.notify_all()
        if self._trigger_thread.is_alive():
            self._trigger_thread.join(timeout)

    # --- the consumer's side --------------------------------------------------------------------------

    def latest(self, after_seq: int, timeout: float) -> Frame | None:
        if not self._queued:
            return super().latest(after_seq, timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
            frame = self._queue.popleft()
            self._taken_seq = frame.seq
            return frame

    def trigger_requested(self) -> None:
        if self.settings.trigger != "software":
            return  # free run: the next frame answers; hardware: the line does
        with self._fire_cond:
            self._fires.append(time.monotonic())
            self._fire_cond.notify()

    def _fire_triggers(self) -> None:
        """TriggerSoftware once per request; a request made while the camera is (re)connecting waits for it,
        as long as the trigger is still wanted (TRIGGER_TIMEOUT_S)."""
        while not self._stop.is_set():
            with self._fire_cond:
                while not self._fires and not self._stop.is_set():
                    self._fire_cond.wait(0.5)
                if self._stop.is_set():
                    return
                requested = self._fires[0]
            with self._camera_lock:
                camera = self._camera
            if camera is None and time.monotonic() - requested < TRIGGER_TIMEOUT_S:
                self._stop.wait(0.05)
                continue
            with self._fire_cond:
                self._fires.popleft()
            try:
                if camera is None:
                    raise GenicamError("the camera was not connected in time")
                camera.software_trigger()  # outside the lock: a camera that went away takes seconds to say so
                camera.counters.software_triggers += 1
            except (GenicamError, AttributeError) as exc:  # AttributeError: closed by the reader meanwhile
                with self._camera_lock:
                    self._totals.software_trigger_failures += 1
                logger.warning("camera %s: TriggerSoftware failed: %s", self.identifier, exc)

    # --- status ---------------------------------------------------------------------------------------

    def genicam_status(self) -> GenicamStatus:
        with self._camera_lock:
            totals, camera = self._totals, self._camera
        if camera is not None:
            with contextlib.suppress(GenicamError, AttributeError):  # closed meanwhile: in the next totals
                totals = _add(totals, camera.stream_counters())
        return GenicamStatus(
            device=self.device,
            applied=self.applied,
            ranges=self.ranges,
            transport=totals,
            incidents=list(self.incidents),
        )

    def _incident(self, message: str) -> None:
        if self.incidents and self.incidents[-1].message == message:
            return  # the same thing again (a retry): the first time says when it began
        self.incidents.append(GenicamIncident(ts=time.time(), message=message))
        logger.info("camera %s: %s", self.identifier, message)

    # --- reader thread --------------------------------------------------------------------------------

    def _open(self) -> GenicamCamera:
        """By serial once known (a replugged camera may have a new address), else as configured."""
        tries = (
            [self.serial, self.identifier]
            if self.serial and self.serial != self.identifier
            else [self.identifier]
        )
        error: GenicamError | None = None
        for identifier in tries:
            try:
                return GenicamCamera(identifier or self.identifier)
            except CameraBusy:
                raise
            except GenicamError as exc:
                error = exc
        assert error is not None
        raise error

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        connected_once = opened_before = False
        while not self._stop.is_set():
            if opened_before:  # a retry: the last open failed, or the camera was lost (as FrameSource counts)
                self.reconnects += 1
                self.retries += 1
            opened_before = True
            try:
                camera = self._open()
            except GenicamUnavailable as exc:
                self._fail(str(exc), "error")
                self._stop.wait(BACKOFF_MAX_S * 2)
                continue
            except CameraBusy as exc:
                self._fail(str(exc), "error")
                self._incident(str(exc))
                self._stop.wait(BUSY_RETRY_S)
                continue
            except GenicamError as exc:
                self._fail(f"{exc}; retrying", "reconnecting")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            try:
                self._connected(camera, connected_once)
            except SettingsRefused as exc:
                camera.close()
                message = f"the camera refused the settings: {exc}"
                self._fail(message, "error")
                self._incident(message)
                self._stop.wait(REFUSED_RETRY_S)
                continue
            except GenicamError as exc:
                camera.close()
                self._fail(f"setting up the camera failed: {exc}; retrying", "reconnecting")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            connected_once = True
            try:
                if self._read_loop_genicam(camera):
                    backoff = BACKOFF_START_S
            finally:
                with self._camera_lock:
                    self._camera = None
                    self._totals = _add(self._totals, camera.stream_counters())
                camera.close()  # outside the lock: a camera that is gone takes seconds to not answer
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.state = "stopped"

    def _connected(self, camera: GenicamCamera, again: bool) -> None:
        """Write the settings, read them back, start the stream; the camera is then the trigger thread's."""
        self.ranges = camera.ranges()
        self.applied = camera.apply(self.settings)
        self.device = camera.info
        self.serial = camera.info.serial or self.serial
        applied = self.applied
        self._features = CameraFeatures(
            exposure_us=applied.exposure_us,
            gain=applied.gain,
            pixel_format=applied.pixel_format,
            trigger=applied.trigger,
        )
        camera.start(self.settings.packet_resend)
        if (
            self.settings.trigger != "hardware"
        ):  # the stream socket is sized by the first frame: not one that counts
            camera.warm_up(fire=self.settings.trigger == "software")
        with self._camera_lock:
            self._camera = camera
        what = f"{camera.info.vendor} {camera.info.model} {camera.info.serial} at {camera.info.address}"
        self._incident(f"{'reconnected to' if again else 'connected to'} {what}; settings applied")
        if self._queued:
            # Nothing comes until the camera is triggered: that is running, not starting.
            self._delivering()

    def _read_loop_genicam(self, camera: GenicamCamera) -> bool:
        """Pop frames until the camera is lost or we are stopped; True when at least one frame came."""
        got_any = False
        timeout_s = self.spec.read_timeout_ms / 1000
        last_frame = last_probe = time.monotonic()
        while not self._stop.is_set():
            grabbed = camera.pop(POP_TIMEOUT_S, self._wants_a_frame)
            now = time.monotonic()
            if grabbed is None:
                if not self._queued and now - last_frame > timeout_s:
                    if camera.alive():
                        self._lost(
                            f"the camera answers but sent no frame for {timeout_s:g} s; restarting the stream"
                        )
                    else:
                        self._lost(
                            f"the camera stopped answering (no frame for {timeout_s:g} s); reconnecting"
                        )
                    return got_any
                if self._queued and now - last_probe > LIVENESS_S:
                    last_probe = now
                    if not camera.alive():
                        self._lost("the camera stopped answering its control channel; reconnecting")
                        return got_any
                continue
            last_frame = last_probe = now
            if not grabbed.ok:
                continue  # counted (incomplete); the next frame is the one to use
            got_any = True
            self._take(grabbed, now, camera)
        return got_any

    def _wants_a_frame(self) -> bool:
        """Whether the frame just completed will be looked at (triggered frames always are)."""
        return self._queued or self._should_decode(time.monotonic())

    def _lost(self, message: str) -> None:
        self._fail(message, "reconnecting")
        self._incident(message)

    def _take(self, grabbed: Grabbed, popped: float, camera: GenicamCamera) -> None:
        # Arrived = complete in the box (popped), as for every source: a frame answering a software trigger is
        # then always after the trigger's request, which is how the station pairs them.
        arrived = popped
        self.frames_read += 1
        self._read_times.append(popped)
        if len(self._read_times) > 60:
            del self._read_times[:-60]
        if not grabbed.copied or (not self._queued and not self._should_decode(popped)):
            self.skipped_decodes += 1
            self.dropped += 1  # free run: newer frames will come before the loop wants one
            return
        try:
            image = to_bgr(grabbed.data, grabbed.conversion, grabbed.width, grabbed.height)
        except GenicamError as exc:
            self._fail(str(exc), "running")
            return
        features = CameraFeatures(
            **{f: getattr(self._features, f) for f in ("exposure_us", "gain", "pixel_format", "trigger")},
            frame_id=grabbed.frame_id,
            timestamp_ns=grabbed.timestamp_ns,
        )
        if not self._queued:
            self._deliver(image, arrived, popped, features)
            return
        now = time.monotonic()
        self._decode_s = 0.8 * self._decode_s + 0.2 * (now - popped)
        self.height, self.width = image.shape[:2]
        with self._cond:
            if len(self._queue) >= QUEUE_FRAMES:
                self._queue.popleft()
                camera.counters.frames_not_inspected += 1
                self.dropped += 1
            self._queue.append(Frame(image, self.frames_read, arrived, (now - popped) * 1000, features))
            self._cond.notify_all()
        self._delivering()


def open_source(spec: SourceSpec) -> FrameSource:
    """The reader for a camera's source: Aravis for gige://, OpenCV for the others."""
    return GigeFrameSource(spec) if spec.source_type == "gige" else FrameSource(spec)


__all__ = ["GigeFrameSource", "open_source"]
