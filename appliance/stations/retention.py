"""Event snapshots on disk and the retention of the history: by age, count and disk budget, oldest first.

Snapshots live under `<data_dir>/events/<camera_id>/<yyyymmdd>/`. The file is written before its row; when
events go, their rows go first (in one transaction) and then their files, so a row never points at a
missing file for longer than the unlink; a file whose row never committed (a crash in between) is an
orphan that `sweep_orphans` removes at the writer's start.

At millions of events the retention works in short transactions (`BatchSize`: about 15 ms each, with a
pause between two) on a thread of its own (`Pruner`), so that an event write never waits for more than one
of them; what it reads comes through indexes (time, id, the snapshot index) and running totals, never a
count of the rows. The counts per minute and hour (`counts`) keep the history of what was removed. Free
pages are reused by new rows; a catalog created in auto_vacuum=INCREMENTAL mode also gives the surplus back
to the file system (`return_free_pages`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.db import Database, open_database, write_transaction
from appliance.errors import is_disk_full
from appliance.stations import counts
from appliance.storage import path_inside

logger = logging.getLogger(__name__)

EVENTS_DIR = "events"
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
    transactions: int = 0


class BatchSize:
    """Rows per delete transaction, adapted so that one transaction holds the catalog's write lock for about
    `target_ms`: what an event write may have to wait for is one such transaction, whatever the backlog."""

    def __init__(self, target_ms: float = 15.0, start: int = 128, low: int = 8, high: int = 4096) -> None:
        self.target_ms, self.rows, self.low, self.high = target_ms, start, low, high

    def update(self, rows: int, elapsed_ms: float) -> None:
        if rows < self.rows:
            return  # a short last batch says nothing about the rate
        if elapsed_ms > self.target_ms * 1.5:
            self.rows = max(self.low, int(self.rows * self.target_ms / elapsed_ms))
        elif elapsed_ms < self.target_ms / 2:
            self.rows = min(self.high, self.rows * 2)


def _delete(
    db: Database, data_path: Path, where: str, args: list[object], order: str, limit: int, batch: BatchSize
) -> Pruned:
    """One transaction: the oldest `limit` events matching `where`, their rule rows and totals; then their
    files (rows first, then files: a row never points at a file that is already gone)."""
    if db.execute(f"SELECT 1 FROM inspection_events WHERE {where} LIMIT 1", args).fetchone() is None:
        return Pruned()  # nothing to do: no write lock taken
    pruned = Pruned(transactions=1)
    started = time.perf_counter()
    with write_transaction(db):
        rows = db.execute(
            f"SELECT id, ts, snapshot, snapshot_bytes FROM inspection_events WHERE {where} ORDER BY {order} LIMIT ?",
            [*args, limit],
        ).fetchall()
        ids = [row[0] for row in rows]
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            db.execute(f"DELETE FROM inspection_events WHERE id IN ({', '.join('?' for _ in chunk)})", chunk)
        counts.forget_events(db, [(event_id, ts, size or 0) for event_id, ts, _rel, size in rows])
    batch.update(len(rows), (time.perf_counter() - started) * 1000)
    for _id, _ts, relpath, size in rows:
        pruned.events += 1
        pruned.bytes += size or 0
        if relpath:
            try:
                snapshot_path(data_path, relpath).unlink(missing_ok=True)
            except (OSError, ValueError):
                logger.warning("could not remove snapshot %s", relpath, exc_info=True)
    return pruned


def totals(db: Database) -> tuple[int, int]:
    """(events, snapshot bytes) stored: running totals, never a count of the rows."""
    return counts.stored_totals(db)


def enforce(
    db: Database,
    data_path: Path,
    limits: Limits,
    now: float | None = None,
    *,
    batch: BatchSize | None = None,
    pause: Callable[[], bool] | None = None,
) -> Pruned:
    """Remove the oldest events (and their snapshots) until age, count and snapshot bytes are within limits.

    One short transaction at a time (`batch`); `pause` runs between two of them (the pruner thread sleeps
    there so that event writes get the lock) and stops the work when it returns False."""
    now = time.time() if now is None else now
    batch = batch or BatchSize()
    done = Pruned()

    def step(where: str, args: list[object], order: str, limit: int) -> int:
        if done.transactions and pause is not None and not pause():
            return 0
        p = _delete(db, data_path, where, args, order, limit, batch)
        done.events += p.events
        done.bytes += p.bytes
        done.transactions += p.transactions
        return p.events

    # By age: the oldest by time, read in the order of the time index.
    while step("ts < ?", [now - limits.max_age_s], "ts", batch.rows):
        pass  # until none is left (a check without the write lock)
    count, size = totals(db)
    while count > limits.max_count:
        removed = step("1", [], "id", min(batch.rows, count - limits.max_count))
        if not removed:
            break
        count, size = totals(db)
    while size > limits.max_bytes:
        # Enough of the oldest to get under the budget: their sizes summed in id order (snapshot index).
        over = size - limits.max_bytes
        oldest = db.execute(
            "SELECT id, snapshot_bytes FROM inspection_events WHERE snapshot IS NOT NULL ORDER BY id LIMIT ?",
            [batch.rows],
        ).fetchall()
        if not oldest:
            break
        freed, last_id = 0, oldest[-1][0]
        for event_id, nbytes in oldest:
            freed += nbytes
            if freed >= over:
                last_id = event_id
                break
        if not step("id <= ?", [last_id], "id", batch.rows):
            break
        count, size = totals(db)
    if done.events:
        logger.info(
            "retention removed %s events (%s MB of snapshots) in %s transactions",
            done.events,
            round(done.bytes / MB, 1),
            done.transactions,
        )
    return done


def return_free_pages(
    db: Database, keep_bytes: int = 64 * MB, step_pages: int = 256, pause: Callable[[], bool] | None = None
) -> int:
    """Give free pages back to the file system (a catalog in auto_vacuum=INCREMENTAL mode), keeping some
    for the events to come, `step_pages` per transaction; returns the pages given back. Other catalogs
    reuse their free pages for new rows (the file stops growing at its largest size) and return nothing."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        return 0
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    given = 0
    while True:
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        spare = free - max(keep_bytes // page_size, pages // 10)
        if spare <= 0 or (given and pause is not None and not pause()):
            return given
        with write_transaction(db):
            # Each step of the pragma moves one page (Python's sqlite3 steps a statement without rows once).
            for _ in range(min(spare, step_pages)):
                db.execute("PRAGMA incremental_vacuum(1)")
        given += min(spare, step_pages)


INCREMENTAL = 2  # PRAGMA auto_vacuum
PAUSE_S = 0.005  # between two delete transactions: the event writer takes the lock meanwhile
RETENTION_EVERY_S = 5.0


def limits_of(config: Config) -> Limits:
    return Limits(
        max_bytes=config.events_max_mb * MB,
        max_count=config.events_max_count,
        max_age_s=config.events_max_age_days * 86_400,
    )


class Pruner:
    """The retention on a thread of its own, with its own connection, in the process that writes events.

    Every few seconds (or at once after `poke`): events past the limits, in short transactions with a pause
    between two, so an event write waits at most one of them however many go; the counts' buckets past their
    own retention; free pages given back (incremental vacuum); then `after_pass` (the writer's triggers)."""

    def __init__(
        self,
        config: Config,
        after_pass: Callable[[Database], None] | None = None,
        every_s: float = RETENTION_EVERY_S,
    ) -> None:
        self.config = config
        self.after_pass = after_pass
        self.every_s = every_s
        self.batch = BatchSize()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-retention", daemon=True)

    def start(self) -> Pruner:
        self._thread.start()
        return self

    def poke(self) -> None:
        """Run a pass now (the disk is low)."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop at the next transaction boundary."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def connect(self) -> Database:
        """The retention's own connection. Its commits never checkpoint the WAL (a checkpoint inside a commit
        holds the write lock the event writer waits on): the pauses between two transactions do, outside
        the lock, which writers do not wait for."""
        db = open_database(self.config.db_path)
        db.execute("PRAGMA wal_autocheckpoint = 0")
        return db

    def pause_with(self, db: Database) -> Callable[[], bool]:
        def pause() -> bool:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            time.sleep(PAUSE_S)
            return not self._stop.is_set()

        return pause

    def pass_now(self) -> Pruned:
        """One pass on its own connection, pausing between transactions as the thread does."""
        db = self.connect()
        try:
            return self.run_once(db, self.pause_with(db))
        finally:
            db.conn.close()

    def run_once(self, db: Database, pause: Callable[[], bool] | None = None) -> Pruned:
        config = self.config
        pruned = enforce(db, config.data_path, limits_of(config), batch=self.batch, pause=pause)
        counts.prune_buckets(
            db, time.time(), config.event_counts_minute_days, config.event_counts_hour_days, pause=pause
        )
        return_free_pages(db, pause=pause)
        if self.after_pass is not None:
            self.after_pass(db)
        return pruned

    def _run(self) -> None:
        db = self.connect()
        pause = self.pause_with(db)
        disk_full_logged_at = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self.run_once(db, pause)
                    disk_full_logged_at = 0.0
                except Exception as exc:  # a busy or full catalog: the next pass tries again
                    if not is_disk_full(exc):
                        logger.exception("the event retention failed; trying again in %s s", self.every_s)
                    elif time.monotonic() - disk_full_logged_at >= 60:  # once, then once a minute
                        disk_full_logged_at = time.monotonic()
                        logger.warning("the event retention waits: the data disk is full (%s)", exc)
                self._wake.wait(self.every_s)
                self._wake.clear()
        finally:
            db.conn.close()


def sweep_orphans(db: Database, data_path: Path, older_than_s: float = 60.0) -> int:
    """Snapshots without a row (the process died between the file and the row), older than a minute."""
    root = events_root(data_path)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    # Read through the snapshot index: the rows with a snapshot are few (the disk budget) among many events.
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
