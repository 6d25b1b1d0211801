"""Rewriting the catalog (`appliance vacuum`): into auto_vacuum=INCREMENTAL mode, so that the pages the
event retention frees can go back to the file system.

A catalog created by this version is in that mode from the start; an older one reuses its free pages for new
rows (its file stops growing at its largest size) but cannot shrink until it is rewritten once: VACUUM copies
the whole file (it needs about its size free again) and blocks every writer meanwhile, so it is a command
to run with the services stopped, never something a start does by itself.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import msgspec

from appliance.db.connection import open_database
from appliance.errors import InsufficientStorage

logger = logging.getLogger(__name__)

MB = 1024 * 1024
MODES = {0: "none", 1: "full", 2: "incremental"}


class VacuumResult(msgspec.Struct, kw_only=True):
    mode_before: str
    mode_after: str
    size_before_mb: float
    size_after_mb: float
    seconds: float


def _size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def vacuum_catalog(path: Path) -> VacuumResult:
    db = open_database(path)
    try:
        before = _size(path)
        free = shutil.disk_usage(path.parent).free
        if free < before * 1.2 + 64 * MB:
            raise InsufficientStorage(
                f"rewriting the catalog needs about {round(before * 1.2 / MB + 64)} MB free next to it; "
                f"{round(free / MB)} MB are"
            )
        mode_before = MODES.get(db.execute("PRAGMA auto_vacuum").fetchone()[0], "?")
        started = time.perf_counter()
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode_after = MODES.get(db.execute("PRAGMA auto_vacuum").fetchone()[0], "?")
        elapsed = time.perf_counter() - started
    finally:
        db.conn.close()
    result = VacuumResult(
        mode_before=mode_before,
        mode_after=mode_after,
        size_before_mb=round(before / MB, 1),
        size_after_mb=round(_size(path) / MB, 1),
        seconds=round(elapsed, 1),
    )
    logger.info("catalog %s rewritten: %s", path, msgspec.structs.asdict(result))
    return result
