"""Web side of the cameras: the status each camera's loop publishes, and frames saved into datasets with the
model's boxes as pre-labels (the live frame, or an event's snapshot)."""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from appliance import catalog
from appliance.caller import CurrentUser
from appliance.camera.publish import PublishedFrame, camera_dir, live_status, read_frame
from appliance.classes import class_names
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid
from appliance.inference.pipeline import Detection
from appliance.redaction import redact_credentials
from appliance.stations.cameras import camera_row, decode_settings
from appliance.stations.schemas import CameraStatus, CaptureResult
from appliance.storage import ImageStore

logger = logging.getLogger(__name__)


# --- status ---------------------------------------------------------------------------------------------


def camera_status(db: Database, config: Config, camera_id: int, user: CurrentUser) -> CameraStatus:
    """What the camera process last published for the camera; never a live state for a stopped camera. No
    credentials, for admins neither: a status is shown on screens and copied into tickets."""
    row = camera_row(db, camera_id)
    settings = decode_settings(row["settings"])
    source = redact_credentials(settings.source)
    base = CameraStatus(camera_id=camera_id, state="stopped", source_type=settings.source_type, source=source)
    if not row["enabled"]:
        return base
    live = live_status(config.runtime_path, camera_id)
    if live.published is None or not live.fresh:
        return msgspec.structs.replace(base, state=live.state, error=live.error)
    # Redacted again: the file may come from a camera process of an older version.
    shown_error = redact_credentials(live.error) if live.error else None
    return msgspec.structs.replace(live.published, source=source, error=shown_error)


# --- frames into datasets ----------------------------------------------------------------------------------


@dataclass
class PreLabel:
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None
    source: str = "model"


NOT_IN_DATASET = "class not in the dataset"
NO_AREA = "no area inside the frame"
ALREADY_THERE = "the frame was already in the dataset (its labels kept)"


def prelabels(
    detections: list[Detection], dataset_classes: list[str], width: int, height: int
) -> tuple[list[PreLabel], list[str], dict[str, int]]:
    """Model detections as dataset boxes, mapped by class name (case-insensitive); (boxes, the class names
    missing from the dataset, how many detections were left out for each reason)."""
    by_name = {name.lower(): i for i, name in enumerate(dataset_classes)}
    boxes: list[PreLabel] = []
    skipped: set[str] = set()
    left_out: collections.Counter[str] = collections.Counter()
    for det in detections:
        class_id = by_name.get(det.class_name.lower())
        if class_id is None:
            skipped.add(det.class_name)
            left_out[NOT_IN_DATASET] += 1
            continue
        x1, y1 = max(0.0, det.x1), max(0.0, det.y1)
        x2, y2 = min(float(width), det.x2), min(float(height), det.y2)
        if x2 <= x1 or y2 <= y1:
            left_out[NO_AREA] += 1
            continue
        boxes.append(PreLabel(class_id, x1, y1, x2, y2, det.confidence))
    return boxes, sorted(skipped), dict(left_out)


def save_frame(
    db: Database,
    store: ImageStore,
    config: Config,
    dataset_id: int,
    user: CurrentUser,
    jpeg: bytes,
    detections: list[Detection],
    name: str,
) -> CaptureResult:
    """Store a frame in a dataset with the model's detections as pre-labels a person reviews."""
    dataset = catalog.writable_dataset(db, dataset_id, user)
    result = catalog.add_images(
        db, store, config, dataset_id, user, [catalog.IncomingFile(name=name, data=jpeg)]
    )
    if result.rejected:
        raise Invalid(f"the frame was refused: {result.rejected[0].reason}")
    if result.duplicates:
        image_id, duplicate = result.duplicates[0].image_id, True
    else:
        image_id, duplicate = result.added[0].id, False
    image = catalog.image_row(db, image_id, user)
    boxes, skipped, left_out = prelabels(
        detections, class_names(dataset["classes"]), int(image["width"]), int(image["height"])
    )
    stored = 0
    if duplicate and boxes:
        left_out[ALREADY_THERE] = len(boxes)
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
        "frame %s saved to dataset %s as image %s (%s pre-labels)", name, dataset_id, image_id, stored
    )
    return CaptureResult(
        image_id=image_id, dataset_id=dataset_id, boxes=stored, skipped_classes=skipped, duplicate=duplicate,
        left_out=left_out,
    )  # fmt: skip


def capture(
    db: Database, store: ImageStore, config: Config, camera_id: int, dataset_id: int, user: CurrentUser
) -> CaptureResult:
    """POST /cameras/{id}/capture: the frame the viewers of that camera see right now."""
    catalog.writable_dataset(db, dataset_id, user)
    status = camera_status(db, config, camera_id, user)
    frame = read_frame(camera_dir(config.runtime_path, camera_id))
    if frame is None or status.state in ("offline", "stopped"):
        raise Conflict(f"no live frame to capture: camera {camera_id} is not streaming")
    name = f"camera{camera_id}-{time.strftime('%Y%m%dT%H%M%S')}-{frame.seq}.jpg"
    return save_frame(db, store, config, dataset_id, user, frame.jpeg, list(frame.meta.detections), name)


def latest_frame(db: Database, config: Config, camera_id: int) -> PublishedFrame:
    """The camera's latest published frame (grid tiles poll this instead of holding a stream each); during an
    outage that is the last one before it: its `meta.ts` says when it arrived."""
    row = camera_row(db, camera_id)
    frame = read_frame(camera_dir(config.runtime_path, camera_id)) if row["enabled"] else None
    if frame is None:
        raise Conflict(f"camera {camera_id} has no frame: it is stopped or has not delivered one yet")
    return frame


def runtime_folder(config: Config, camera_id: int) -> Path:
    return camera_dir(config.runtime_path, camera_id)
