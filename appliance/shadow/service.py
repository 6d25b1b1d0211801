"""Shadow mode for the web: start and stop a camera's candidate, read its figures (published by the camera
process), promote it to the camera's model and undo that (one action each), and the disagreements kept.

Promote changes what judges the camera's parts, so it goes through the camera's one settings write
(`stations.cameras.replace_camera`, admins) and is recorded with what it replaced; undo puts the camera's
model back and the candidate into the shadow again, and is refused once the camera's model was changed
another way since.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.caller import CurrentUser, require_admin, require_writer
from appliance.camera.publish import STATUS_STALE_S, camera_dir
from appliance.camera.service import save_frame
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, NotFound
from appliance.models.artifacts import artifacts_on_disk
from appliance.models.registry import deployed_model, model_row, readable_model
from appliance.shadow.contracts import SHADOW_STATUS, BoxDifference, ModelResult, ShadowStatus
from appliance.shadow.schemas import (
    PromotionRead,
    ShadowCapture,
    ShadowEventPage,
    ShadowEventRead,
    ShadowOverview,
    ShadowRead,
    ShadowStart,
)
from appliance.shadow.store import snapshot_path
from appliance.stations.cameras import camera_row, decode_settings, replace_camera
from appliance.stations.schemas import CameraWrite, CaptureResult
from appliance.storage import ImageStore, read_capped

logger = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024


def read_status(runtime_path: Path, camera_id: int) -> ShadowStatus | None:
    """The camera process's figures of the camera's shadow; None when missing, unreadable or stale."""
    try:
        status = msgspec.json.decode(
            (camera_dir(runtime_path, camera_id) / SHADOW_STATUS).read_bytes(), type=ShadowStatus
        )
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return status if time.time() - status.updated_at <= STATUS_STALE_S else None


def _camera_model(db: Database, camera: dict[str, Any]) -> dict[str, Any] | None:
    """The model the camera runs: its own choice, else the box's deployed model."""
    chosen = decode_settings(camera["settings"]).model_id
    if chosen is None:
        return deployed_model(db)
    return next(db.query("SELECT * FROM models WHERE id = ?", [chosen]), None)


def _shadow_row(db: Database, camera_id: int) -> dict[str, Any] | None:
    return next(db.query("SELECT * FROM camera_shadows WHERE camera_id = ?", [camera_id]), None)


def _shadow_read(db: Database, config: Config, row: dict[str, Any]) -> ShadowRead:
    found = db.execute("SELECT name FROM models WHERE id = ?", [row["model_id"]]).fetchone()
    status = read_status(config.runtime_path, row["camera_id"])
    if status is not None and status.started_at != row["started_at"]:
        status = None  # figures of an earlier shadow of this camera
    window = int(row["window_size"])
    if status is None:
        can, note = False, "waiting for the camera process to run the candidate (is the camera running?)"
    elif status.state == "error":
        can, note = False, f"the candidate does not run: {status.error}"
    elif status.shadowed < window:
        can, note = False, f"{status.shadowed} of {window} inspections shadowed so far"
    else:
        can, note = True, f"the camera will run model {row['model_id']} instead of its current model"
    return ShadowRead(
        camera_id=row["camera_id"],
        model_id=row["model_id"],
        model_name=found[0] if found else f"model {row['model_id']}",
        window=window,
        started_at=row["started_at"],
        started_by=row["started_by"],
        status=status,
        can_promote=can,
        promote_note=note,
    )


def _promotion_read(db: Database, row: dict[str, Any]) -> PromotionRead:
    camera = next(db.query("SELECT * FROM cameras WHERE id = ?", [row["camera_id"]]), None)
    current = decode_settings(camera["settings"]).model_id if camera else None
    latest = db.execute(
        "SELECT MAX(id) FROM shadow_promotions WHERE camera_id = ?", [row["camera_id"]]
    ).fetchone()[0]
    return PromotionRead(
        id=row["id"],
        camera_id=row["camera_id"],
        from_model_id=row["from_model_id"],
        to_model_id=row["to_model_id"],
        window=row["window_size"],
        shadowed=row["shadowed"],
        agreed=row["agreed"],
        promoted_by=row["promoted_by"],
        promoted_at=row["promoted_at"],
        undone_by=row["undone_by"],
        undone_at=row["undone_at"],
        can_undo=row["undone_at"] is None and row["id"] == latest and current == row["to_model_id"],
    )


def overview(db: Database, config: Config, camera_id: int, user: CurrentUser) -> ShadowOverview:
    camera = camera_row(db, camera_id)
    running = _camera_model(db, camera)
    shadow = _shadow_row(db, camera_id)
    promotion = next(
        db.query("SELECT * FROM shadow_promotions WHERE camera_id = ? ORDER BY id DESC LIMIT 1", [camera_id]),
        None,
    )
    return ShadowOverview(
        camera_id=camera_id,
        camera_model_id=running["id"] if running else None,
        camera_model_name=running["name"] if running else None,
        shadow=_shadow_read(db, config, shadow) if shadow else None,
        last_promotion=_promotion_read(db, promotion) if promotion else None,
    )


def start_shadow(
    db: Database, config: Config, camera_id: int, body: ShadowStart, user: CurrentUser
) -> ShadowOverview:
    """Run a model the caller may see beside the camera's (replacing any candidate it had)."""
    require_writer(user)
    model = readable_model(db, body.model_id, user)
    if not artifacts_on_disk(config, model["id"]):
        raise Conflict(f"model {model['id']} has no completed export; export it to ONNX (or TensorRT) first")
    window = body.window or config.shadow_window
    with write_transaction(db):
        camera = camera_row(db, camera_id)
        running = _camera_model(db, camera)
        if running is not None and running["id"] == model["id"]:
            raise Conflict(f"camera {camera_id} already runs model {model['id']}; shadow another model")
        db.execute(
            """INSERT INTO camera_shadows (camera_id, model_id, window_size, started_by, started_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (camera_id) DO UPDATE SET model_id = excluded.model_id, window_size = excluded.window_size,
                 started_by = excluded.started_by, started_at = excluded.started_at""",
            [camera_id, model["id"], window, user.id, now_iso()],
        )
    logger.info(
        "camera %s: model %s shadowed by %s (window %s)", camera_id, model["id"], user.username, window
    )
    return overview(db, config, camera_id, user)


def stop_shadow(db: Database, camera_id: int, user: CurrentUser) -> None:
    require_writer(user)
    with write_transaction(db):
        camera_row(db, camera_id)
        if _shadow_row(db, camera_id) is None:
            raise NotFound(f"camera {camera_id} shadows no model")
        db.execute("DELETE FROM camera_shadows WHERE camera_id = ?", [camera_id])


def _set_camera_model(db: Database, camera: dict[str, Any], model_id: int | None, user: CurrentUser) -> None:
    """The camera's model through the camera's one settings write (validation and all)."""
    settings = msgspec.structs.replace(decode_settings(camera["settings"]), model_id=model_id)
    replace_camera(db, camera["id"], CameraWrite(name=camera["name"], settings=settings), user)


def promote(db: Database, config: Config, camera_id: int, user: CurrentUser) -> ShadowOverview:
    """The candidate becomes the camera's model, once `window` inspections were shadowed (admins)."""
    require_admin(user)
    with write_transaction(db):
        camera = camera_row(db, camera_id)
        row = _shadow_row(db, camera_id)
        if row is None:
            raise Conflict(f"camera {camera_id} shadows no model: nothing to promote")
        readable_model(db, row["model_id"], user)
        shadow = _shadow_read(db, config, row)
        if not shadow.can_promote or shadow.status is None:
            raise Conflict(f"not yet: {shadow.promote_note}")
        previous = decode_settings(camera["settings"]).model_id
        _set_camera_model(db, camera, row["model_id"], user)
        db.execute(
            """INSERT INTO shadow_promotions (camera_id, from_model_id, to_model_id, window_size, shadowed, agreed,
                                              promoted_by, promoted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                camera_id, previous, row["model_id"], shadow.window, shadow.status.window_shadowed,
                shadow.status.window_agreed, user.id, now_iso(),
            ],
        )  # fmt: skip
        db.execute("DELETE FROM camera_shadows WHERE camera_id = ?", [camera_id])
    logger.info(
        "camera %s: model %s promoted by %s (was %s)", camera_id, row["model_id"], user.username, previous
    )
    return overview(db, config, camera_id, user)


def undo_promotion(
    db: Database, config: Config, camera_id: int, promotion_id: int, user: CurrentUser
) -> ShadowOverview:
    """The camera's previous model back, and the promoted one shadowing it again (admins)."""
    require_admin(user)
    with write_transaction(db):
        camera = camera_row(db, camera_id)
        row = next(
            db.query(
                "SELECT * FROM shadow_promotions WHERE id = ? AND camera_id = ?", [promotion_id, camera_id]
            ),
            None,
        )
        if row is None:
            raise NotFound(f"camera {camera_id} has no promotion {promotion_id}")
        read = _promotion_read(db, row)
        if row["undone_at"] is not None:
            raise Conflict(f"promotion {promotion_id} was already undone")
        if not read.can_undo:
            raise Conflict(
                f"camera {camera_id}'s model changed since promotion {promotion_id}; change it back in its settings"
            )
        if row["from_model_id"] is not None:
            model_row(db, row["from_model_id"])  # 404 when the earlier model was deleted since
        _set_camera_model(db, camera, row["from_model_id"], user)
        db.execute(
            "UPDATE shadow_promotions SET undone_by = ?, undone_at = ? WHERE id = ?",
            [user.id, now_iso(), promotion_id],
        )
        db.execute(
            """INSERT INTO camera_shadows (camera_id, model_id, window_size, started_by, started_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (camera_id) DO NOTHING""",
            [camera_id, row["to_model_id"], row["window_size"], user.id, now_iso()],
        )
    logger.info("camera %s: promotion %s undone by %s", camera_id, promotion_id, user.username)
    return overview(db, config, camera_id, user)


# --- disagreements ------------------------------------------------------------------------------------------


def _event_read(row: dict[str, Any]) -> ShadowEventRead:
    return ShadowEventRead(
        id=row["id"],
        camera_id=row["camera_id"],
        ts=row["ts"],
        mode=row["mode"],
        trigger_id=row["trigger_id"],
        deployed=msgspec.json.decode(row["deployed"], type=ModelResult),
        candidate=msgspec.json.decode(row["candidate"], type=ModelResult),
        difference=msgspec.json.decode(row["difference"], type=BoxDifference),
        width=row["width"],
        height=row["height"],
        has_snapshot=bool(row["snapshot"]),
    )


def list_events(db: Database, camera_id: int, before_id: int | None, limit: int) -> ShadowEventPage:
    camera_row(db, camera_id)
    rows = list(
        db.query(
            "SELECT * FROM shadow_events WHERE camera_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            [camera_id, before_id or 2**63 - 1, limit + 1],
        )
    )
    items = [_event_read(r) for r in rows[:limit]]
    return ShadowEventPage(items=items, next_before_id=items[-1].id if len(rows) > limit and items else None)


def _event_row(db: Database, event_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM shadow_events WHERE id = ?", [event_id]), None)
    if row is None:
        raise NotFound(f"shadow event {event_id} not found")
    return row


def get_event(db: Database, event_id: int) -> ShadowEventRead:
    return _event_read(_event_row(db, event_id))


def snapshot_bytes(db: Database, config: Config, event_id: int) -> bytes:
    row = _event_row(db, event_id)
    if not row["snapshot"]:
        raise NotFound(f"shadow event {event_id} has no frame (snapshots off, or the disk was low)")
    try:
        return read_capped(snapshot_path(config.data_path, row["snapshot"]), MAX_SNAPSHOT_BYTES)
    except (OSError, ValueError):
        raise NotFound(f"the frame of shadow event {event_id} is gone") from None


def send_to_dataset(
    db: Database, store: ImageStore, config: Config, event_id: int, body: ShadowCapture, user: CurrentUser
) -> CaptureResult:
    """The frame into a dataset with the chosen model's boxes as pre-labels (the events' send-to-dataset)."""
    event = get_event(db, event_id)
    jpeg = snapshot_bytes(db, config, event_id)
    chosen = event.candidate if body.boxes == "candidate" else event.deployed
    name = (
        f"shadow{event.id}-camera{event.camera_id}-{event.deployed.verdict}-vs-{event.candidate.verdict}.jpg"
    )
    return save_frame(db, store, config, body.dataset_id, user, jpeg, list(chosen.detections), name)
