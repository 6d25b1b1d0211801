"""Camera settings in the catalog, the status the camera process publishes, and capture of frames into datasets."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from appliance import catalog
from appliance.caller import CurrentUser, require_admin, require_writer
from appliance.camera.capture import gstreamer_available
from appliance.camera.contracts import FrameDetection
from appliance.camera.publish import STATUS_STALE_S, MalformedStatus, PublishedFrame, read_frame, read_status
from appliance.camera.schemas import CameraSettings, CameraSettingsRead, CameraStatus, CaptureResult
from appliance.classes import class_names
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Invalid, NotFound, Unavailable
from appliance.storage import ImageStore

logger = logging.getLogger(__name__)

SETTINGS_KEY = "camera"
URL_SCHEMES = {"rtsp", "rtsps", "http", "https"}


# --- settings -----------------------------------------------------------------------------------


def settings_row(db: Database) -> tuple[CameraSettings, str | None]:
    row = db.execute("SELECT value, updated_at FROM settings WHERE key = ?", [SETTINGS_KEY]).fetchone()
    if row is None:
        return CameraSettings(), None
    try:
        return msgspec.json.decode(row[0], type=CameraSettings), row[1]
    except msgspec.ValidationError:
        # Stored by an older version with a field since removed or tightened: keep what still fits.
        raw = {k: v for k, v in json.loads(row[0]).items() if k in CameraSettings.__struct_fields__}
        try:
            return msgspec.convert(raw, CameraSettings), row[1]
        except msgspec.ValidationError:
            logger.exception("stored camera settings are unusable; using defaults")
            return CameraSettings(), row[1]


def settings_stamp(db: Database) -> str | None:
    """The row's updated_at: the camera process polls this and reloads when it changes."""
    row = db.execute("SELECT updated_at FROM settings WHERE key = ?", [SETTINGS_KEY]).fetchone()
    return row[0] if row else None


def get_settings(db: Database) -> CameraSettingsRead:
    settings, updated_at = settings_row(db)
    return CameraSettingsRead(
        settings=settings, updated_at=updated_at, gstreamer_available=gstreamer_available()
    )


def validate_settings(settings: CameraSettings) -> None:
    source = settings.source.strip()
    if settings.enabled and not source:
        raise Invalid("source: set a source before starting the camera")
    if not source:
        return
    if settings.source_type == "v4l2":
        if not re.fullmatch(r"(/dev/video)?\d+|/dev/v4l/by-(id|path)/[\w.:-]+", source):
            raise Invalid("source: a V4L2 source is /dev/videoN (or a /dev/v4l/by-id path)")
    elif settings.source_type == "url":
        parts = urlsplit(source)
        if parts.scheme.lower() not in URL_SCHEMES or not parts.netloc:
            raise Invalid("source: a URL source must be rtsp://, rtsps://, http:// or https:// with a host")
    elif settings.source_type == "gstreamer":
        if "appsink" not in source:
            raise Invalid(
                "source: a GStreamer pipeline must end in appsink (e.g. '... ! videoconvert ! appsink')"
            )
    elif settings.source_type == "file" and not Path(source).is_absolute():
        raise Invalid("source: a video file needs an absolute path on the box")
    if settings.auto_capture and settings.auto_capture_dataset_id is None:
        raise Invalid("auto_capture_dataset_id: choose the dataset that auto-captured frames go to")


def store_settings(db: Database, settings: CameraSettings) -> None:
    with write_transaction(db):
        db.execute(
            """INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            [SETTINGS_KEY, msgspec.json.encode(settings).decode(), now_iso()],
        )


def put_settings(db: Database, body: CameraSettings, user: CurrentUser) -> CameraSettingsRead:
    """Replace the settings; admins only (a GStreamer pipeline or a path is a lot of power over the box)."""
    require_admin(user)
    validate_settings(body)
    if body.auto_capture:
        assert body.auto_capture_dataset_id is not None
        catalog.writable_dataset(db, body.auto_capture_dataset_id, user)
        body = msgspec.structs.replace(body, auto_capture_user_id=user.id)
    else:
        body = msgspec.structs.replace(body, auto_capture_user_id=None)
    store_settings(db, body)
    return get_settings(db)


def set_enabled(db: Database, enabled: bool, user: CurrentUser) -> CameraSettingsRead:
    """The desired state; the camera process starts or stops the stream within a second."""
    require_writer(user)
    settings, _ = settings_row(db)
    updated = msgspec.structs.replace(settings, enabled=enabled)
    validate_settings(updated)
    store_settings(db, updated)
    return get_settings(db)


# --- status -------------------------------------------------------------------------------------


def camera_status(runtime_path: Path) -> CameraStatus:
    """What the camera process last published; 'offline' when it has not written for a while."""
    try:
        status = read_status(runtime_path)
    except MalformedStatus:
        return CameraStatus(state="offline", error="unreadable status from the camera process")
    if status is None:
        return CameraStatus(state="offline", error="the camera process is not running (appliance camera)")
    if time.time() - status.updated_at > STATUS_STALE_S:
        return msgspec.structs.replace(
            status, state="offline", fps=0.0, error="the camera process stopped publishing (is it running?)"
        )
    return status


# --- capture ------------------------------------------------------------------------------------


@dataclass
class PreLabel:
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None
    source: str = "model"


def prelabels(
    detections: list[FrameDetection], dataset_classes: list[str], width: int, height: int
) -> tuple[list[PreLabel], list[str]]:
    """Model detections as dataset boxes, mapped by class name (case-insensitive); unknown names skipped."""
    by_name = {name.lower(): i for i, name in enumerate(dataset_classes)}
    boxes: list[PreLabel] = []
    skipped: set[str] = set()
    for det in detections:
        class_id = by_name.get(det.class_name.lower())
        if class_id is None:
            skipped.add(det.class_name)
            continue
        x1, y1 = max(0.0, det.x1), max(0.0, det.y1)
        x2, y2 = min(float(width), det.x2), min(float(height), det.y2)
        if x2 <= x1 or y2 <= y1:
            continue
        boxes.append(PreLabel(class_id, x1, y1, x2, y2, det.confidence))
    return boxes, sorted(skipped)


def save_frame(
    db: Database,
    store: ImageStore,
    config: Config,
    dataset_id: int,
    user: CurrentUser,
    frame: PublishedFrame,
    name_prefix: str = "camera",
) -> CaptureResult:
    """Store one published frame in a dataset with the model's detections as pre-labels to review."""
    dataset = catalog.writable_dataset(db, dataset_id, user)
    name = f"{name_prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{frame.seq}.jpg"
    result = catalog.add_images(
        db, store, config, dataset_id, user, [catalog.IncomingFile(name=name, data=frame.jpeg)]
    )
    if result.rejected:
        raise Invalid(f"the frame was refused: {result.rejected[0].reason}")
    if result.duplicates:
        image_id, duplicate = result.duplicates[0].image_id, True
    else:
        image_id, duplicate = result.added[0].id, False
    classes = class_names(dataset["classes"])
    image = catalog.image_row(db, image_id, user)
    width, height = int(image["width"]), int(image["height"])
    boxes, skipped = prelabels(frame.meta.detections, classes, width, height)
    stored = 0
    if not duplicate and boxes:
        with write_transaction(db):
            catalog.replace_boxes(db, image_id, dataset_id, boxes, None)
            # Pre-labels leave the image 'unlabeled': a person reviews them before they count as labels.
            db.execute(
                "UPDATE images SET box_count = ?, version = version + 1, updated_at = ? WHERE id = ?",
                [len(boxes), now_iso(), image_id],
            )
        stored = len(boxes)
    logger.info(
        "camera frame %s saved to dataset %s as image %s (%s pre-labels)",
        frame.seq,
        dataset_id,
        image_id,
        stored,
    )
    return CaptureResult(
        image_id=image_id,
        dataset_id=dataset_id,
        boxes=stored,
        skipped_classes=skipped,
        duplicate=duplicate,
        frame_seq=frame.seq,
    )


def capture(
    db: Database, store: ImageStore, config: Config, dataset_id: int, user: CurrentUser
) -> CaptureResult:
    """POST /camera/capture: the frame the viewers see right now."""
    catalog.writable_dataset(db, dataset_id, user)
    frame = read_frame(config.runtime_path)
    status = camera_status(config.runtime_path)
    if frame is None or status.state == "offline":
        raise Unavailable("no live frame to capture: the camera is not streaming")
    return save_frame(db, store, config, dataset_id, user, frame)


def user_for_auto_capture(db: Database, user_id: int) -> CurrentUser:
    row = db.execute("SELECT id, username, role, disabled FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None or row[3]:
        raise NotFound(f"user {user_id} who set up auto-capture no longer exists or is disabled")
    return CurrentUser(id=row[0], username=row[1], role=row[2], token_id="camera-auto-capture")
