"""Cameras in the catalog: create, read, replace, delete, start/stop; settings validated on write, and the
source's credentials masked for everyone but admins."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from appliance import audit
from appliance.caller import CurrentUser, require_admin, require_writer
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.db.schema_camera_ids import LAST_DELETED_CAMERA
from appliance.errors import Conflict, Invalid, NotFound
from appliance.inference.engines import check_engine_pin
from appliance.redaction import has_unreadable_password, redact_credentials
from appliance.stations import revisions
from appliance.stations.class_check import check_rule_classes
from appliance.stations.genicam import parse_source
from appliance.stations.rules import validate_zones_and_rules
from appliance.stations.schemas import CameraRead, CameraSettings, CameraWrite

logger = logging.getLogger(__name__)

URL_SCHEMES = {"rtsp", "rtsps", "http", "https"}
MAX_CAMERAS = 16


def validate_source(settings: CameraSettings, enabled: bool) -> None:
    source = settings.source.strip()
    if enabled and not source:
        raise Invalid("settings.source: set a source before starting the camera")
    if not source:
        return
    if settings.source_type in ("url", "gstreamer") and (
        has_unreadable_password(source)
        or (settings.source_type == "url" and any(c.isspace() for c in source))
    ):
        raise Invalid(
            "settings.source: a URL's password holds a character that ends the address: percent-encode it "
            "(/ as %2F, ? as %3F, # as %23, @ in a path as %40, a space as %20)"
        )
    if settings.source_type == "v4l2":
        if not re.fullmatch(r"(/dev/video)?\d+|/dev/v4l/by-(id|path)/[\w.:-]+", source):
            raise Invalid("settings.source: a V4L2 source is /dev/videoN (or a /dev/v4l/by-id path)")
    elif settings.source_type == "url":
        try:
            parts = urlsplit(source)
        except ValueError:  # an unbalanced '[' or ']' (a password's, say): never quoted back
            raise Invalid(
                "settings.source: not a readable URL (a '[' or ']' outside an IPv6 host must be percent-encoded: "
                "%5B, %5D)"
            ) from None
        if parts.scheme.lower() not in URL_SCHEMES or not parts.netloc:
            raise Invalid(
                "settings.source: a URL source must be rtsp://, rtsps://, http:// or https:// with a host"
            )
    elif settings.source_type == "gstreamer":
        if "appsink" not in source:
            raise Invalid(
                "settings.source: a GStreamer pipeline must end in appsink (e.g. '... ! videoconvert ! appsink')"
            )
    elif settings.source_type == "file" and not Path(source).is_absolute():
        raise Invalid("settings.source: a video file needs an absolute path on the box")
    elif settings.source_type == "gige":
        parse_source(source)


def validate_genicam(settings: CameraSettings) -> None:
    """GenICam settings belong to gige sources, whose size and rate are GenICam features too."""
    if settings.source_type != "gige":
        if settings.genicam is not None:
            raise Invalid("settings.genicam: only a gige:// camera has GenICam settings (set it to null)")
        return
    for name in ("width", "height", "fps"):
        if getattr(settings, name):
            target = "frame_rate" if name == "fps" else name
            raise Invalid(
                f"settings.{name}: a GigE / USB3 Vision camera takes it as settings.genicam.{target} (leave 0)"
            )


# Checks against the camera itself (the web process reads a GenICam camera's ranges), run before the write.
DeviceCheck = Callable[[CameraSettings], None]


def validate(settings: CameraSettings, enabled: bool) -> None:
    validate_source(settings, enabled)
    validate_genicam(settings)
    validate_zones_and_rules(settings)
    check_engine_pin(settings.engine, "settings.engine")


def decode_settings(raw: str) -> CameraSettings:
    try:
        return msgspec.json.decode(raw, type=CameraSettings)
    except msgspec.ValidationError:
        # Stored by an older version with a field since removed or tightened: keep what still fits.
        data = {k: v for k, v in json.loads(raw).items() if k in CameraSettings.__struct_fields__}
        try:
            return msgspec.convert(data, CameraSettings)
        except msgspec.ValidationError:
            logger.exception("stored camera settings are unusable; using defaults")
            return CameraSettings()


def to_read(row: dict[str, Any], user: CurrentUser | None) -> CameraRead:
    settings = decode_settings(row["settings"])
    if user is None or not user.is_admin:
        settings = msgspec.structs.replace(settings, source=redact_credentials(settings.source))
    return CameraRead(
        id=row["id"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        settings=settings,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def camera_row(db: Database, camera_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM cameras WHERE id = ?", [camera_id]), None)
    if row is None:
        raise NotFound(f"camera {camera_id} not found")
    return row


def list_cameras(db: Database, user: CurrentUser | None) -> list[CameraRead]:
    return [to_read(row, user) for row in db.query("SELECT * FROM cameras ORDER BY id")]


def get_camera(db: Database, camera_id: int, user: CurrentUser | None) -> CameraRead:
    return to_read(camera_row(db, camera_id), user)


def _name_taken(db: Database, name: str, other_than: int | None) -> bool:
    row = db.execute(
        "SELECT id FROM cameras WHERE name = ? COLLATE NOCASE AND id IS NOT ?", [name.strip(), other_than]
    ).fetchone()
    return row is not None


def next_camera_id(db: Database) -> int:
    """Past every camera there is and every one deleted (their events, counts and revisions keep the id)."""
    row = db.execute(
        """SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM cameras
                               UNION ALL SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?)""",
        [LAST_DELETED_CAMERA],
    ).fetchone()
    return int(row[0] or 0) + 1


def create_camera(
    db: Database, body: CameraWrite, user: CurrentUser, check_device: DeviceCheck | None = None
) -> CameraRead:
    """Admins only: a source is a path, a URL or a pipeline run on the box."""
    require_admin(user)
    name = body.name.strip()
    if not name:
        raise Invalid("name: a camera needs a name")
    enabled = bool(body.enabled)
    validate(body.settings, enabled)
    if check_device is not None:
        check_device(body.settings)
    now = now_iso()
    with write_transaction(db):
        check_rule_classes(db, body.settings)
        if db.execute("SELECT COUNT(*) FROM cameras").fetchone()[0] >= MAX_CAMERAS:
            raise Conflict(f"this box serves at most {MAX_CAMERAS} cameras")
        if _name_taken(db, name, None):
            raise Conflict(f"name: a camera called {name!r} already exists")
        camera_id = next_camera_id(db)
        db.execute(
            "INSERT INTO cameras (id, name, enabled, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [camera_id, name, int(enabled), msgspec.json.encode(body.settings).decode(), now, now],
        )
        revision = revisions.record_revision(db, camera_id, name, body.settings, user)
    audit.note_change(
        None, audited(name, enabled, body.settings), target=f"camera_id={camera_id}", revision=revision
    )
    return get_camera(db, camera_id, user)


def audited(name: str, enabled: bool, settings: CameraSettings) -> dict[str, Any]:
    """A camera as its audit entries show it (zones, rules, thresholds, mode, source without its password)."""
    return {"name": name, "enabled": enabled, "settings": msgspec.to_builtins(settings)}


def replace_camera(
    db: Database,
    camera_id: int,
    body: CameraWrite,
    user: CurrentUser,
    check_device: DeviceCheck | None = None,
) -> CameraRead:
    require_admin(user)
    name = body.name.strip()
    if not name:
        raise Invalid("name: a camera needs a name")
    if check_device is not None:
        camera_row(db, camera_id)
        validate(body.settings, False)
        check_device(body.settings)  # may ask the camera (a second): outside the write transaction
    with write_transaction(db):
        row = camera_row(db, camera_id)
        enabled = bool(row["enabled"]) if body.enabled is None else body.enabled
        validate(body.settings, enabled)
        check_rule_classes(db, body.settings)
        if _name_taken(db, name, camera_id):
            raise Conflict(f"name: a camera called {name!r} already exists")
        db.execute(
            "UPDATE cameras SET name = ?, enabled = ?, settings = ?, updated_at = ? WHERE id = ?",
            [name, int(enabled), msgspec.json.encode(body.settings).decode(), now_iso(), camera_id],
        )
        revision = revisions.record_revision(db, camera_id, name, body.settings, user)
    before = audited(row["name"], bool(row["enabled"]), decode_settings(row["settings"]))
    audit.note_change(
        before, audited(name, enabled, body.settings), revision_before=row["revision_id"], revision=revision
    )
    return get_camera(db, camera_id, user)


def delete_camera(db: Database, camera_id: int, user: CurrentUser) -> None:
    """The camera goes; its events stay in the history (and age out with the retention)."""
    require_admin(user)
    with write_transaction(db):
        row = camera_row(db, camera_id)
        revisions.supersede_current(db, camera_id)
        db.execute("DELETE FROM cameras WHERE id = ?", [camera_id])
    audit.note_change(
        audited(row["name"], bool(row["enabled"]), decode_settings(row["settings"])),
        None,
        revision=row["revision_id"],
    )


def set_enabled(db: Database, camera_id: int, enabled: bool, user: CurrentUser) -> CameraRead:
    """The desired state (labelers and admins); the camera process follows within a second."""
    require_writer(user)
    with write_transaction(db):
        row = camera_row(db, camera_id)
        validate_source(decode_settings(row["settings"]), enabled)
        db.execute(
            "UPDATE cameras SET enabled = ?, updated_at = ? WHERE id = ?",
            [int(enabled), now_iso(), camera_id],
        )
    audit.note_change({"enabled": bool(row["enabled"])}, {"enabled": enabled})
    return get_camera(db, camera_id, user)


def camera_stamps(db: Database) -> dict[int, str]:
    """{id: updated_at}: the camera process polls this and reloads a camera whose stamp changed."""
    return {row[0]: row[1] for row in db.execute("SELECT id, updated_at FROM cameras").fetchall()}


def enabled_cameras(db: Database) -> dict[int, tuple[str, CameraSettings, str, int | None]]:
    """{id: (name, settings, updated_at, revision id of these settings)} of the cameras that should run."""
    rows = db.execute(
        "SELECT id, name, settings, updated_at, revision_id FROM cameras WHERE enabled = 1"
    ).fetchall()
    return {row[0]: (row[1], decode_settings(row[2]), row[3], row[4]) for row in rows}
