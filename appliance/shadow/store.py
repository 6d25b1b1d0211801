"""Shadow mode in the catalog and on disk, for the camera process: the shadows to run, and the disagreements
kept (a row in shadow_events with both results, the frame under <data_dir>/shadow/<camera>/<day>/), bounded
by `shadow_events_max` with the oldest removed first (row first, then its file)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import msgspec

from appliance.db import Database, write_transaction
from appliance.shadow.contracts import Disagreement, ShadowRow
from appliance.storage import path_inside, write_atomic

logger = logging.getLogger(__name__)

SHADOW_DIR = "shadow"
PRUNE_BATCH = 500


def shadow_root(data_path: Path) -> Path:
    return data_path / SHADOW_DIR


def snapshot_path(data_path: Path, relpath: str) -> Path:
    """The file of a stored relative path, refused when the path would leave the shadow folder."""
    return path_inside(shadow_root(data_path), relpath)


def active_shadows(db: Database) -> dict[int, ShadowRow]:
    rows = db.execute("SELECT camera_id, model_id, window_size, started_at FROM camera_shadows").fetchall()
    return {r[0]: ShadowRow(camera_id=r[0], model_id=r[1], window=r[2], started_at=r[3]) for r in rows}


def record_disagreement(
    db: Database, data_path: Path, found: Disagreement, jpeg: bytes | None, serial: int, max_events: int
) -> int:
    """Write the frame (when given), then the row; then the oldest beyond `max_events` go. Returns the row id."""
    relpath = None
    if jpeg is not None:
        day = time.strftime("%Y%m%d", time.gmtime(found.ts))
        relpath = f"{found.camera_id}/{day}/{int(found.ts * 1000)}-{os.getpid()}-{serial}.jpg"
        write_atomic(shadow_root(data_path) / relpath, jpeg)
    encode = msgspec.json.encode
    with write_transaction(db):
        event_id = db.execute(
            """INSERT INTO shadow_events (camera_id, ts, mode, trigger_id, deployed_model_id, candidate_model_id,
                                          deployed, candidate, difference, width, height, snapshot, snapshot_bytes)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                found.camera_id, found.ts, found.mode, found.trigger_id, found.deployed.model_id,
                found.candidate.model_id, encode(found.deployed).decode(), encode(found.candidate).decode(),
                encode(found.difference).decode(), found.width, found.height, relpath, len(jpeg or b""),
            ],
        ).lastrowid  # fmt: skip
        pruned = db.execute(
            "SELECT id, snapshot FROM shadow_events ORDER BY id DESC LIMIT ? OFFSET ?",
            [PRUNE_BATCH, max_events],
        ).fetchall()
        if pruned:
            db.execute(
                f"DELETE FROM shadow_events WHERE id IN ({','.join('?' * len(pruned))})",
                [r[0] for r in pruned],
            )
    for _, snapshot in pruned:
        if snapshot:
            try:
                snapshot_path(data_path, snapshot).unlink(missing_ok=True)
            except (OSError, ValueError):
                logger.warning("could not remove shadow snapshot %s", snapshot, exc_info=True)
    assert event_id is not None
    return int(event_id)


def sweep_orphans(db: Database, data_path: Path, camera_id: int, older_than_s: float = 60.0) -> int:
    """Frames of a camera's disagreements without a row (the process died between the file and the row)."""
    folder = shadow_root(data_path) / str(int(camera_id))
    if not folder.is_dir():
        return 0
    known = {
        row[0]
        for row in db.execute(
            "SELECT snapshot FROM shadow_events WHERE camera_id = ? AND snapshot IS NOT NULL", [camera_id]
        )
    }
    cutoff = time.time() - older_than_s
    removed = 0
    for path in folder.rglob("*.jpg"):
        try:
            if (
                path.relative_to(shadow_root(data_path)).as_posix() not in known
                and path.stat().st_mtime < cutoff
            ):
                path.unlink()
                removed += 1
        except OSError:
            continue
    if removed:
        logger.info("removed %s shadow frames of camera %s without a row", removed, camera_id)
    return removed
