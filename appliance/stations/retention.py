"""Event snapshots on disk and the retention of the history: by age, count and disk budget, oldest first.

Snapshots live under `<data_dir>/events/<camera_id>/<yyyymmdd>/`. The file is written before its row; when
events go, their rows go first (in one transaction) and then their files, so a row never points at a
missing file for longer than the unlink; a file whose row never committed (a crash in between) is an
orphan that `sweep_orphans` removes at the writer's start.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.db import Database, write_transaction
from appliance.storage import path_inside

logger = logging.getLogger(__name__)

EVENTS_DIR = "events"
BATCH = 500
MB = 1024 * 1024


def events_root(data_path: Path) -> Path:
    return data_path / EVENTS_DIR


def snapshot_relpath(camera_id: int, ts: float, serial: int) -> str:
    day = time.strftime("%Y%m%d", time.gmtime(ts))
    return f"{camera_id}/{day}/{int(ts * 1000)}-{os.getpid()}-{serial}.jpg"


def snapshot_path(data_path: Path, relpath: str) -> Path:
    """The file of a stored relative path, refused when the path would leave the events folder."""
    return path_inside(events_root(data_path), relpath)


@dataclass
class Limits:
    max_bytes: int
    max_count: int
    max_age_s: float


@dataclass
class Pruned:
    events: int = 0
    bytes: int = 0


def _delete_oldest(db: Database, data_path: Path, where: str, args: list[object], limit: int) -> Pruned:
    pruned = Pruned()
    with write_transaction(db):
        rows = db.execute(
            f"SELECT id, snapshot, snapshot_bytes FROM inspection_events WHERE {where} ORDER BY id LIMIT ?",
            [*args, limit],
        ).fetchall()
        if rows:
            db.execute(
                f"DELETE FROM inspection_events WHERE id IN ({', '.join('?' for _ in rows)})",
                [row[0] for row in rows],
            )
    for _id, relpath, size in rows:
        pruned.events += 1
        pruned.bytes += size or 0
        if relpath:
            try:
                snapshot_path(data_path, relpath).unlink(missing_ok=True)
            except (OSError, ValueError):
                logger.warning("could not remove snapshot %s", relpath, exc_info=True)
    return pruned


def totals(db: Database) -> tuple[int, int]:
    count, size = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(snapshot_bytes), 0) FROM inspection_events"
    ).fetchone()
    return int(count), int(size)


def enforce(db: Database, data_path: Path, limits: Limits, now: float | None = None) -> Pruned:
    """Remove the oldest events (and their snapshots) until age, count and snapshot bytes are within limits."""
    now = time.time() if now is None else now
    done = Pruned()

    def add(p: Pruned) -> int:
        done.events += p.events
        done.bytes += p.bytes
        return p.events

    while add(_delete_oldest(db, data_path, "ts < ?", [now - limits.max_age_s], BATCH)) == BATCH:
        pass
    count, size = totals(db)
    while count > limits.max_count:
        removed = _delete_oldest(db, data_path, "1", [], min(BATCH, count - limits.max_count))
        add(removed)
        count, size = count - removed.events, size - removed.bytes
        if not removed.events:
            break
    while size > limits.max_bytes:
        # Enough of the oldest to get under the budget: their sizes summed in id order.
        over = size - limits.max_bytes
        oldest = db.execute(
            "SELECT id, snapshot_bytes FROM inspection_events WHERE snapshot_bytes > 0 ORDER BY id LIMIT ?",
            [BATCH],
        ).fetchall()
        if not oldest:
            break
        freed, last_id = 0, oldest[-1][0]
        for event_id, nbytes in oldest:
            freed += nbytes
            if freed >= over:
                last_id = event_id
                break
        removed = _delete_oldest(db, data_path, "id <= ?", [last_id], BATCH)
        add(removed)
        size -= removed.bytes
        if not removed.events:
            break
    if done.events:
        logger.info(
            "retention removed %s events (%s MB of snapshots)", done.events, round(done.bytes / MB, 1)
        )
    return done


def sweep_orphans(db: Database, data_path: Path, older_than_s: float = 60.0) -> int:
    """Snapshots without a row (the process died between the file and the row), older than a minute."""
    root = events_root(data_path)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    known = {
        row[0] for row in db.execute("SELECT snapshot FROM inspection_events WHERE snapshot IS NOT NULL")
    }
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            try:
                if rel not in known and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    if removed:
        logger.info("removed %s event snapshots without an event row", removed)
    return removed
