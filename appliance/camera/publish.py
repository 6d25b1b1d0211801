"""The camera process's hand-over to the web process: per camera the latest JPEG, its detections and the status.

Files under `<runtime_dir>/cameras/<camera_id>/`, each replaced atomically (temp file + rename):

    frame.jpg    the latest published frame
    frame.json   its sequence number, detections, per-stage timings and the CRC-32 of frame.jpg
    status.json  state, source, fps, dropped frames, model, error (rewritten at least once a second)

frame.jpg is written before frame.json; a reader takes frame.json, then frame.jpg, and retries when the
CRC does not match (the camera replaced the JPEG in between), so a frame and its boxes always pair up.
No fsync: the runtime folder is tmpfs on the device and a frame is worthless after a power cut.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgspec

from appliance.camera.contracts import FrameMeta
from appliance.stations.schemas import CameraState, CameraStatus
from appliance.system.processes import is_alive, read_heartbeat

logger = logging.getLogger(__name__)

CAMERAS_DIR = "cameras"
FRAME_JPEG = "frame.jpg"
FRAME_META = "frame.json"
STATUS = "status.json"
# The camera process rewrites status.json at least this often; older means it is not running.
STATUS_INTERVAL_S = 0.5
STATUS_STALE_S = 5.0
# A published frame older than this (or than three of the camera's frame intervals, when it runs slower) is
# no live picture: /frame says so in its headers and the console marks it stale.
FRAME_STALE_S = 3.0
FAILURE_LOG_EVERY_S = 60.0  # a runtime file that cannot be written: one log line a minute

STAGES = (
    "wait",
    "capture",
    "wait_model",
    "preprocess",
    "inference",
    "postprocess",
    "rules",
    "encode",
    "frame_age",
)


def camera_dir(runtime_path: Path, camera_id: int) -> Path:
    return runtime_path / CAMERAS_DIR / str(camera_id)


def replace_file(path: Path, data: bytes) -> None:
    """Atomic replace without fsync (runtime files only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RollingStats:
    """Last N values per stage; median and p99 for the status."""

    def __init__(self, size: int = 120) -> None:
        self.values: dict[str, deque[float]] = {stage: deque(maxlen=size) for stage in STAGES}

    def add(self, timings: dict[str, float]) -> None:
        for stage, value in timings.items():
            if stage in self.values:
                self.values[stage].append(value)

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, values in self.values.items():
            if not values:
                continue
            ordered = sorted(values)
            out[stage] = {
                "last": round(values[-1], 2),
                "median": round(ordered[len(ordered) // 2], 2),
                "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            }
        return out


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class Publisher:
    """Camera side: writes one camera's frames and status into the runtime folder.

    Best effort: a file that cannot be replaced (the runtime folder on a full disk, as `./var/run` is in
    development) is logged once a minute and never stops the camera loop, whose verdicts and events go on."""

    def __init__(self, runtime_path: Path, camera_id: int) -> None:
        self.folder = camera_dir(runtime_path, camera_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._failure_logged_at: float | None = None

    def publish_frame(self, jpeg: bytes, meta: FrameMeta) -> None:
        meta = msgspec.structs.replace(meta, crc32=zlib.crc32(jpeg), size=len(jpeg))
        if self._replace(FRAME_JPEG, jpeg):
            self._replace(FRAME_META, msgspec.json.encode(meta))

    def publish_status(self, status: CameraStatus) -> None:
        self._replace(STATUS, msgspec.json.encode(status))

    def _replace(self, name: str, data: bytes) -> bool:
        try:
            replace_file(self.folder / name, data)
        except OSError as exc:
            now = time.monotonic()
            if self._failure_logged_at is None or now - self._failure_logged_at >= FAILURE_LOG_EVERY_S:
                self._failure_logged_at = now
                logger.warning(
                    "could not replace %s (%s): the console does not see this camera's latest",
                    self.folder / name,
                    exc,
                )
            return False
        return True

    def clear_frame(self) -> None:
        for name in (FRAME_META, FRAME_JPEG):
            (self.folder / name).unlink(missing_ok=True)

    def remove(self) -> None:
        """The camera was stopped or deleted: nothing of it stays to be shown as live."""
        self.clear_frame()
        (self.folder / STATUS).unlink(missing_ok=True)


@dataclass(frozen=True)
class PublishedFrame:
    seq: int
    jpeg: bytes
    meta: FrameMeta
    meta_json: bytes


def frame_age_s(meta: FrameMeta, now: float | None = None) -> float:
    """Seconds since the frame arrived from the source (the box's own clock)."""
    return max(0.0, (time.time() if now is None else now) - meta.ts)


def is_stale(meta: FrameMeta, now: float | None = None) -> bool:
    limit = max(FRAME_STALE_S, 3.0 / meta.fps) if meta.fps > 0 else FRAME_STALE_S
    return frame_age_s(meta, now) > limit


def meta_stamp(folder: Path) -> int | None:
    """Changes whenever a new frame is published (cheap stat; no read)."""
    try:
        st = os.stat(folder / FRAME_META)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns ^ st.st_ino


def read_frame(folder: Path, attempts: int = 5) -> PublishedFrame | None:
    """The latest frame of a camera folder and its metadata, consistent with each other; None when none."""
    for _ in range(attempts):
        try:
            meta_json = (folder / FRAME_META).read_bytes()
            jpeg = (folder / FRAME_JPEG).read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta = _FRAME_DECODER.decode(meta_json)
        except msgspec.DecodeError:  # half-written by an older writer, or not ours: try again, then give up
            time.sleep(0.002)
            continue
        if zlib.crc32(jpeg) == meta.crc32:
            return PublishedFrame(meta.seq, jpeg, meta, meta_json)
        time.sleep(0.002)  # the camera is between its two renames
    return None


def read_status(folder: Path) -> CameraStatus | None:
    """A camera's last status.json; None when there is none; MalformedStatus when it is not a status."""
    path = folder / STATUS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _STATUS_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedStatus(f"{path} is not a camera status: {exc}") from None


class MalformedStatus(Exception):
    """status.json exists but does not decode (written by another version, or damaged)."""


@dataclass(frozen=True)
class LiveStatus:
    """An enabled camera as the camera process last described it: its fresh status (`state` is the status's),
    or `offline` (no camera process) / `starting` (not described yet) with the last status file, if any."""

    state: CameraState
    error: str | None
    published: CameraStatus | None  # the last status.json (stale unless `fresh`)
    fresh: bool = False


def live_status(runtime_path: Path, camera_id: int, now: float | None = None) -> LiveStatus:
    now = time.time() if now is None else now
    try:
        status = read_status(camera_dir(runtime_path, camera_id))
    except MalformedStatus:
        return LiveStatus("offline", "unreadable status from the camera process", None)
    if status is not None and now - status.updated_at <= STATUS_STALE_S:
        return LiveStatus(status.state, status.error, status, fresh=True)
    if not is_alive(read_heartbeat(runtime_path, "camera"), now):
        return LiveStatus("offline", "the camera process is not running (appliance camera)", status)
    return LiveStatus("starting", None, status)


_FRAME_DECODER = msgspec.json.Decoder(FrameMeta)
_STATUS_DECODER = msgspec.json.Decoder(CameraStatus)
