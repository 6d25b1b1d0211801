"""Frame sources (V4L2, RTSP/HTTP URL, GStreamer, looped file) read by a thread that keeps only the newest frame.

Latency first: the reader thread decodes as fast as the source delivers and overwrites the one slot it
has; the consumer always takes the newest frame and never sees a queue of stale ones. A frame that is
overwritten before anyone took it counts as dropped. A source that fails to open or stops delivering is
reopened with exponential backoff, and `state`/`error` say so meanwhile.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from appliance.redaction import redact_credentials, remember_secrets

if TYPE_CHECKING:
    from appliance.stations.genicam import CameraFeatures, GenicamSettings, GenicamStatus

logger = logging.getLogger(__name__)

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0


def gstreamer_available() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


@dataclass(frozen=True)
class SourceSpec:
    """The part of the camera settings that decides what is opened; a change reopens the source."""

    source_type: str
    source: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    open_timeout_ms: int = 5000
    read_timeout_ms: int = 5000
    genicam: GenicamSettings | None = None  # gige: the features the box sets on the camera


@dataclass
class Frame:
    image: np.ndarray
    seq: int  # counts frames read from the source since the reader started
    captured_at: float  # time.monotonic() when the source delivered the frame (before decoding)
    capture_ms: float  # time spent in retrieve() (decode for V4L2 MJPEG, colour conversion for FFmpeg)
    camera: CameraFeatures | None = (
        None  # GenICam cameras: the feature values and the camera's frame id, clock
    )


class SourceError(Exception):
    """The source cannot be opened with these settings (not worth a fast retry)."""


def _v4l2_index(source: str) -> int | str:
    match = re.fullmatch(r"(?:/dev/video)?(\d+)", source.strip())
    return int(match.group(1)) if match else source


def open_capture(spec: SourceSpec) -> Any:
    """An opened cv2.VideoCapture for the spec; raises SourceError when it cannot be opened."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        spec.open_timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        spec.read_timeout_ms,
    ]
    if spec.source_type == "v4l2":
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, spec.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, spec.height),
            (cv2.CAP_PROP_FPS, spec.fps),
        ):
            if value:
                params += [prop, int(value)]
        params += [cv2.CAP_PROP_BUFFERSIZE, 1]  # the driver keeps one buffer, not four stale ones
        cap = cv2.VideoCapture(_v4l2_index(spec.source), cv2.CAP_V4L2, params)
    elif spec.source_type == "gstreamer":
        if not gstreamer_available():
            raise SourceError(
                "this OpenCV build has no GStreamer support; use the device's OpenCV (JetPack) for "
                "nvarguscamerasrc pipelines, or a v4l2/url source"
            )
        cap = cv2.VideoCapture(spec.source, cv2.CAP_GSTREAMER)
    elif spec.source_type in ("url", "file"):
        cap = cv2.VideoCapture(spec.source, cv2.CAP_FFMPEG, params)
    else:
        raise SourceError(f"unknown source type {spec.source_type!r}")
    if not cap.isOpened():
        cap.release()
        raise OSError(f"could not open {spec.source_type} source {spec.source!r}")
    return cap


class FrameSource:
    """A reader thread over one source; `latest()` hands out the newest frame exactly once. What it says about
    the source (`error`, `shown_source`, its log lines) carries no credentials (appliance.redaction)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        remember_secrets(spec.source)
        self.shown_source = redact_credentials(spec.source)
        self._state = "starting"
        self.state_since = time.time()  # wall time of the latest change of `state`
        self.last_frame_at: float | None = None  # wall time the newest frame arrived from the source
        self.error: str | None = None
        self.reconnects = 0  # attempts to open the source again after it was lost or failed to open
        self.lost_since: float | None = None  # wall time the source was lost (None while it delivers)
        self.retries = 0  # attempts since lost_since
        self.dropped = 0
        self.frames_read = 0
        self.width = 0
        self.height = 0
        self._slot: Frame | None = None
        self._taken_seq = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)
        self._read_times: list[float] = []
        self._consumer_waiting = False
        self._last_take: float | None = None
        self._loop_s: float | None = None
        self._loop_dev = 0.0
        self._decode_s = 0.0
        self._decode_after = 0.0
        self.skipped_decodes = 0

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value != self._state:
            self._state = value
            self.state_since = time.time()

    def start(self) -> FrameSource:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    def latest(self, after_seq: int, timeout: float) -> Frame | None:
        """The newest frame newer than `after_seq`, waiting up to `timeout`; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._consumer_waiting = True
            try:
                while self._slot is None or self._slot.seq <= after_seq:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        return None
                    self._cond.wait(remaining)
            finally:
                self._consumer_waiting = False
            frame = self._slot
            self._taken_seq = frame.seq
            self._plan_next_decode(time.monotonic())
            return frame

    def _plan_next_decode(self, now: float) -> None:
        """Decode again only shortly before the consumer will come back for a frame.

        The consumer (inference) is usually slower than the source; retrieving every frame of a 30 fps
        camera when the model takes 8 frames spends CPU on frames nobody sees. What retrieve() costs
        depends on the backend: V4L2 decodes MJPEG there (1080p: ~15 ms on a Jetson core), FFmpeg has
        already decoded in grab() and only converts to BGR. Frames are still grabbed as they come, so the
        one retrieved is as fresh as before; the last couple before the consumer returns are retrieved.
        """
        if self._last_take is not None:
            period = now - self._last_take
            if self._loop_s is None:
                self._loop_s = period
            else:
                self._loop_dev = 0.7 * self._loop_dev + 0.3 * abs(period - self._loop_s)
                self._loop_s = 0.7 * self._loop_s + 0.3 * period
        self._last_take = now
        fps = self.source_fps()
        # The last couple of frames before the consumer returns, more when its pace varies (a busy CPU):
        # retrieving a frame too many costs a little CPU, one too few makes the loop wait for the camera.
        margin = (2.5 / fps if fps > 0 else 0.1) + 2 * self._loop_dev
        self._decode_after = now + (self._loop_s or 0.0) - margin - self._decode_s

    def _should_decode(self, now: float) -> bool:
        return self._consumer_waiting or now >= self._decode_after

    def trigger_requested(self) -> None:
        """A trigger is waiting for this source's next frame (a camera in software-trigger mode exposes one)."""

    def genicam_status(self) -> GenicamStatus | None:
        """The GenICam part of the status (GigE / USB3 Vision sources only)."""
        return None

    def next_frame_due(self, after: float) -> float | None:
        """When the first frame grabbed after `after` (monotonic) is due, at the source's pace; None when it
        has none (a camera waiting for its trigger, a stalled source)."""
        fps = self.source_fps()
        times = self._read_times
        if fps <= 0 or not times:
            return None
        period = 1.0 / fps
        behind = max(0, math.floor((after - times[-1]) / period) + 1)
        return times[-1] + behind * period

    def source_fps(self) -> float:
        times = self._read_times
        if len(times) < 2 or time.monotonic() - times[-1] > 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)

    # --- reader thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        opened_before = False
        while not self._stop.is_set():
            if opened_before:  # a retry: the last open failed, or the source was lost
                self.reconnects += 1
                self.retries += 1
            opened_before = True
            try:
                cap = open_capture(self.spec)
            except SourceError as exc:
                self._fail(str(exc), "error")
                self._stop.wait(BACKOFF_MAX_S * 2)
                continue
            except (OSError, cv2.error) as exc:
                self._fail(str(exc), "reconnecting")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            try:
                if self._read_loop(cap):
                    backoff = BACKOFF_START_S
            finally:
                cap.release()
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.state = "stopped"

    def _fail(self, message: str, state: str) -> None:
        message = redact_credentials(message)  # OpenCV's and our own messages quote the source
        if message != self.error:
            logger.warning("camera source %s: %s", self.shown_source, message)
        self.error = message
        self.state = state
        if self.lost_since is None:
            self.lost_since = time.time()

    def _read_loop(self, cap: Any) -> bool:
        """Read until the source fails or we are stopped; True when at least one frame came."""
        is_file = self.spec.source_type == "file"
        pace = 0.0
        if is_file:
            file_fps = self.spec.fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
            pace = 1.0 / file_fps if file_fps > 0 else 0.04
        next_due = time.monotonic()
        got_any = False
        while not self._stop.is_set():
            if pace:
                # A file has no clock of its own: deliver it at its frame rate, like a camera.
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                next_due = max(next_due + pace, time.monotonic() - pace)
            if not cap.grab():
                if is_file and got_any:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the file
                    if cap.grab():
                        pass
                    else:
                        self._fail("video file stopped delivering frames", "reconnecting")
                        return got_any
                else:
                    self._fail("source delivered no frame (lost or timed out); reconnecting", "reconnecting")
                    return got_any
            started = time.monotonic()
            got_any = True
            self.frames_read += 1
            self._read_times.append(started)
            if len(self._read_times) > 60:
                del self._read_times[:-60]
            if not self._should_decode(started):
                self.skipped_decodes += 1
                self.dropped += 1  # grabbed but never inferred: newer frames will come before it is needed
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                self._fail("could not decode a frame from the source", "reconnecting")
                return got_any
            # Age counts from the moment the frame's data arrived (grab returned), decode included.
            self._deliver(image, started, started)
        return got_any

    def _deliver(
        self, image: np.ndarray, arrived: float, started: float, camera: CameraFeatures | None = None
    ) -> None:
        """Put a decoded frame in the slot (the newest wins; one nobody took counts as dropped)."""
        now = time.monotonic()
        self.last_frame_at = time.time() - (now - arrived)
        self._decode_s = 0.8 * self._decode_s + 0.2 * (now - started)
        self.height, self.width = image.shape[:2]
        with self._cond:
            if self._slot is not None and self._slot.seq > self._taken_seq:
                self.dropped += 1
            self._slot = Frame(image, self.frames_read, arrived, (now - started) * 1000, camera)
            self._cond.notify_all()
        if self.state != "running":
            logger.info("camera source %s delivering %dx%d", self.shown_source, self.width, self.height)
        self._delivering()

    def _delivering(self) -> None:
        """The source delivers: running, and no longer lost."""
        self.state = "running"
        self.error = None
        self.lost_since, self.retries = None, 0
