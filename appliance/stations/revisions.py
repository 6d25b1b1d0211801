"""Revisions of a camera's settings: what judged each inspection event.

Every change of a camera's settings (zones, rules, thresholds, mode, source and camera features: the whole
CameraSettings object) writes a new revision in the same transaction, and the camera's row names its current
one; the camera process runs each settings object with its revision id and every event it writes carries it.
The source is stored with its password masked (a revision explains a verdict; it never reconnects a camera).

A revision stays readable while an event names it. `mark_referenced` (in the events' own transaction) keeps
the id range of the events that name each revision, and `prune_unreferenced` (the event writer's retention
pass) deletes revisions no camera runs any more and no event names, after a grace period that covers a camera
process still finishing frames with the previous settings.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

import msgspec

from appliance.caller import CurrentUser
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import NotFound
from appliance.redaction import redact_credentials
from appliance.stations.contracts import EventRow
from appliance.stations.schemas import CameraSettings

logger = logging.getLogger(__name__)

PRUNE_GRACE_S = 600.0  # a superseded revision is kept at least this long (events still queued may name it)
_encoder = msgspec.json.Encoder()


class RevisionSummary(msgspec.Struct, kw_only=True):
    id: int
    camera_id: int
    camera_name: str
    created_at: str
    created_by: str  # user name; "before revisions" for cameras that existed before this was recorded
    current: bool  # the camera runs it now
    superseded_at: float | None  # unix time it was replaced (null while current)


class RevisionRead(RevisionSummary, kw_only=True):
    """One revision with the settings that judged the events naming it (the source's password masked)."""

    settings: CameraSettings


def _masked(settings: CameraSettings) -> CameraSettings:
    return msgspec.structs.replace(settings, source=redact_credentials(settings.source))


def _source_digest(source: str, salt: str | None = None) -> str:
    """`salt$sha256(salt + source)`: tells a changed password apart without keeping it (random salt per row)."""
    salt = salt if salt is not None else secrets.token_hex(16)
    return f"{salt}${hashlib.sha256((salt + source).encode()).hexdigest()}"


def _same_source(digest: str | None, source: str) -> bool:
    """Whether the source as typed is the one the revision was made with (unknown for earlier builds: no)."""
    if not digest or "$" not in digest:
        return False
    return hmac.compare_digest(_source_digest(source, digest.split("$", 1)[0]), digest)


def record_revision(
    db: Database, camera_id: int, name: str, settings: CameraSettings, user: CurrentUser | None
) -> int:
    """Inside the caller's write transaction: the revision of these settings, a new one when they differ from
    the camera's current revision; the camera's row then names it."""
    text = _encoder.encode(_masked(settings)).decode()
    current = db.execute(
        """SELECT r.id, r.settings, r.source_digest FROM cameras c JOIN camera_revisions r ON r.id = c.revision_id
           WHERE c.id = ?""",
        [camera_id],
    ).fetchone()
    if current is not None and current[1] == text and _same_source(current[2], settings.source):
        return int(current[0])
    now = time.time()
    if current is not None:
        db.execute("UPDATE camera_revisions SET superseded_at = ? WHERE id = ?", [now, current[0]])
    revision_id = db.execute(
        """INSERT INTO camera_revisions
             (camera_id, camera_name, settings, created_at, created_by, created_by_name, source_digest)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [
            camera_id, name, text, now_iso(), user.id if user else None, user.username if user else "",
            _source_digest(settings.source),
        ],
    ).lastrowid  # fmt: skip
    assert revision_id is not None
    db.execute("UPDATE cameras SET revision_id = ? WHERE id = ?", [revision_id, camera_id])
    return int(revision_id)


def supersede_current(db: Database, camera_id: int) -> None:
    """The camera goes: its revision stops being current (and may go once no event names it)."""
    db.execute(
        """UPDATE camera_revisions SET superseded_at = ?
           WHERE id = (SELECT revision_id FROM cameras WHERE id = ?) AND superseded_at IS NULL""",
        [time.time(), camera_id],
    )


# --- reads -------------------------------------------------------------------------------------------

_SELECT = """SELECT r.*, (c.revision_id IS NOT NULL) AS current FROM camera_revisions r
             LEFT JOIN cameras c ON c.revision_id = r.id"""


def _summary_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "camera_id": row["camera_id"],
        "camera_name": row["camera_name"],
        "created_at": row["created_at"],
        "created_by": row["created_by_name"],
        "current": bool(row["current"]),
        "superseded_at": row["superseded_at"],
    }


def get_revision(db: Database, camera_id: int, revision_id: int) -> RevisionRead:
    row = next(db.query(f"{_SELECT} WHERE r.id = ? AND r.camera_id = ?", [revision_id, camera_id]), None)
    if row is None:
        raise NotFound(
            f"revision {revision_id} of camera {camera_id} not found (no event names it any more, or it never existed)"
        )
    from appliance.stations.cameras import decode_settings  # the one tolerant decoder of stored settings

    # Masked again on the way out: revisions of cameras from before revisions were copied as they were stored.
    return RevisionRead(**_summary_fields(row), settings=_masked(decode_settings(row["settings"])))


def list_revisions(
    db: Database, camera_id: int, *, before_id: int | None = None, limit: int = 50
) -> list[RevisionSummary]:
    """Newest first; the revisions still kept (current, or named by an event)."""
    sql, args = f"{_SELECT} WHERE r.camera_id = ?", [camera_id]
    if before_id is not None:
        sql, args = sql + " AND r.id < ?", [*args, before_id]
    return [
        RevisionSummary(**_summary_fields(row))
        for row in db.query(sql + " ORDER BY r.id DESC LIMIT ?", [*args, limit])
    ]


# --- references from events, and pruning -------------------------------------------------------------


def mark_referenced(db: Database, rows: list[EventRow]) -> None:
    """In the events' transaction: widen each named revision's event-id range to these events."""
    ranges: dict[int, tuple[int, int]] = {}
    for row in rows:
        if row.settings_revision is None:
            continue
        low, high = ranges.get(row.settings_revision, (row.id, row.id))
        ranges[row.settings_revision] = (min(low, row.id), max(high, row.id))
    for revision_id, (low, high) in ranges.items():
        db.execute(
            """UPDATE camera_revisions SET first_event_id = MIN(COALESCE(first_event_id, ?), ?),
               last_event_id = MAX(COALESCE(last_event_id, ?), ?) WHERE id = ?""",
            [low, low, high, high, revision_id],
        )


def prune_unreferenced(db: Database, now: float | None = None, grace_s: float = PRUNE_GRACE_S) -> int:
    """Delete revisions superseded longer than `grace_s` ago that no event names any more; returns how many.

    Whether an event still names one is a primary-key range scan over the events between its first and last
    referencing ids (what is left of them), so this costs little beside ten million events."""
    now = time.time() if now is None else now
    candidates = db.execute(
        """SELECT id, first_event_id, last_event_id FROM camera_revisions
           WHERE superseded_at IS NOT NULL AND superseded_at < ?
             AND id NOT IN (SELECT revision_id FROM cameras WHERE revision_id IS NOT NULL)""",
        [now - grace_s],
    ).fetchall()
    unreferenced = [
        revision_id
        for revision_id, first, last in candidates
        if first is None
        or db.execute(
            "SELECT 1 FROM inspection_events WHERE id BETWEEN ? AND ? AND settings_revision = ? LIMIT 1",
            [first, last, revision_id],
        ).fetchone()
        is None
    ]
    if unreferenced:
        with write_transaction(db):
            for revision_id in unreferenced:  # checked again inside the write lock: an event may have come
                db.execute(
                    """DELETE FROM camera_revisions WHERE id = ? AND NOT EXISTS (
                         SELECT 1 FROM inspection_events e WHERE e.id BETWEEN
                           COALESCE(camera_revisions.first_event_id, 0) AND COALESCE(camera_revisions.last_event_id, -1)
                           AND e.settings_revision = camera_revisions.id)""",
                    [revision_id],
                )
        logger.info("removed %s camera settings revisions no event names any more", len(unreferenced))
    return len(unreferenced)


__all__ = [
    "RevisionRead",
    "RevisionSummary",
    "get_revision",
    "list_revisions",
    "mark_referenced",
    "prune_unreferenced",
    "record_revision",
    "supersede_current",
]
