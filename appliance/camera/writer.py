"""The event writer: the one thread of the camera process that stores inspection events.

Camera loops hand events off with `submit` (never blocking); this thread writes their snapshots (temp file
+ rename, then one syncfs for the batch), calls `record_events` for the batch in one transaction and expires
triggers nobody served; the retention runs beside it on a thread of its own (`retention.Pruner`). Bounded:
past MAX_PENDING_BYTES of queued snapshots an event is kept without its snapshot, past MAX_PENDING events it
is dropped; both are counted in the status.
A catalog that refuses the batch (busy, disk full) is retried with backoff; the batch is kept meanwhile, the
events behind it wait in the queue (its bounds above), and the camera's status says so (`storage_note`).
An event kept without its snapshot names why (`snapshot_missing`).
"""

from __future__ import annotations

import collections
import logging
import shutil
import threading
import time
from dataclasses import dataclass

import msgspec

from appliance.config import Config
from appliance.db import Database, open_database
from appliance.outputs import outbox
from appliance.stations import retention, revisions, triggers
from appliance.stations.contracts import InspectionEvent, SnapshotMissing
from appliance.stations.events import record_events
from appliance.storage import sync_filesystem, write_unsynced

logger = logging.getLogger(__name__)

MAX_PENDING = 20_000
MAX_PENDING_BYTES = 64 * 1024 * 1024
BATCH = 256
FAILURE_LOG_EVERY_S = 60.0  # while the catalog refuses the writes: a line a minute, not one per retry
PRUNE_TRIGGERS_AFTER_S = 7 * 86_400


@dataclass
class WriterStats:
    written: int = 0
    snapshots_dropped: int = 0  # kept as events without a snapshot (queue or disk full)
    events_dropped: int = 0  # never written: the queue was full
    failures: int = 0
    last_error: str | None = None
    failing_since: float | None = (
        None  # unix time the catalog started refusing the events; None while it writes
    )
    below_reserve: bool = False  # the data disk's free space was below disk_min_free_mb at the last snapshot


class EventWriter:
    def __init__(self, config: Config) -> None:
        self.config = config
        outbox.install(config)  # each event's outbox rows commit in the event's own transaction
        self.stats = WriterStats()
        self._queue: collections.deque[tuple[InspectionEvent, bytes | None]] = collections.deque()
        self._expire: list[tuple[int, str]] = []
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._serial = 0
        self._thread = threading.Thread(target=self._run, name="camera-event-writer", daemon=True)
        self._written_cond = threading.Condition()
        # The retention runs beside this thread, never in its way (retention.Pruner).
        self._pruner = retention.Pruner(config, after_pass=_after_retention)

    def start(self) -> EventWriter:
        self._thread.start()
        self._pruner.start()
        return self

    def submit(self, event: InspectionEvent, jpeg: bytes | None) -> bool:
        """Queue an event (with its snapshot JPEG); False when the queue was full and it was dropped."""
        with self._cond:
            if len(self._queue) >= MAX_PENDING:
                self.stats.events_dropped += 1
                return False
            if jpeg is not None and self._pending_bytes + len(jpeg) > MAX_PENDING_BYTES:
                event = _without_snapshot(event, "queue_full")
                self.stats.snapshots_dropped += 1
                jpeg = None
            self._pending_bytes += len(jpeg) if jpeg else 0
            self._queue.append((event, jpeg))
            self._cond.notify()
        return True

    def expire(self, trigger_id: int, reason: str) -> None:
        with self._cond:
            self._expire.append((trigger_id, reason))
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def held(self) -> int:
        """Inspection events not in the catalog yet: the batch being retried and those queued behind it."""
        return len(self._queue) + self._carried

    def storage_note(self) -> str:
        """What the camera's status says about where its events go, in words; "" while all is well."""
        stats = self.stats
        if stats.failing_since is not None:
            why = "the data disk is full" if "full" in (stats.last_error or "") else stats.last_error
            return (
                f"inspection events cannot be written ({why}): {self.held} held in memory (at most "
                f"{MAX_PENDING:,}), written as soon as the catalog accepts them again"
            )
        if stats.below_reserve and self._below_reserve():  # checked again: space may have come back since
            return (
                f"the data disk has less free space than its reserve ({self.config.disk_min_free_mb} MB): "
                "inspection events are kept without snapshots"
            )
        return ""

    def wait_idle(self, timeout: float) -> bool:
        """Until everything submitted so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._expire and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        self.wait_idle(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        if self.held:  # a stop while the catalog refused them (a full disk): say what is lost
            logger.error(
                "%s inspection events were never written (%s): the camera process stopped while the catalog "
                "refused them",
                self.held, self.stats.last_error,
            )  # fmt: skip

    # --- the thread ----------------------------------------------------------------------------------

    _busy = False
    _carried = 0  # events of the batch the catalog refused, retried
    _logged_failure_at = 0.0

    def _take(self) -> tuple[list[tuple[InspectionEvent, bytes | None]], list[tuple[int, str]]]:
        with self._cond:
            while not self._queue and not self._expire and not self._stop.is_set():
                self._cond.wait(1.0)
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            expire, self._expire = self._expire, []
            self._busy = bool(batch or expire)
            return batch, expire

    def _run(self) -> None:
        db = open_database(self.config.db_path)
        data_path = self.config.data_path
        root = retention.events_root(data_path)
        root.mkdir(parents=True, exist_ok=True)
        try:
            retention.sweep_orphans(db, data_path)
        except Exception:
            logger.exception("sweeping orphan snapshots failed")
        backoff = 0.1
        carried: list[InspectionEvent] = []
        try:
            while not self._stop.is_set() or self._queue or carried:
                batch, expire = self._take() if not carried else ([], [])
                try:
                    events = carried or self._store_snapshots(batch)
                    carried = events  # kept before anything else can fail: a refused write loses none
                    self._expire_triggers(db, expire)
                    record_events(db, events)
                    with self._cond:
                        self.stats.written += len(events)
                    carried = []
                    backoff = 0.1
                    self._writing_again()
                except Exception as exc:  # busy catalog, disk full, a failing hook: keep the batch, retry
                    self._failed(exc, len(carried))
                    if self._stop.wait(backoff) and not carried:
                        break
                    backoff = min(backoff * 2, 5.0)
                finally:
                    with self._cond:
                        self._busy = bool(carried)
                        self._carried = len(carried)
            self._pruner.close()
            self._pruner.run_once(db)  # the history is within its limits when the process ends, too
        except Exception:
            logger.exception("the event writer stopped on an error")
        finally:
            db.conn.close()

    def _expire_triggers(self, db: Database, expire: list[tuple[int, str]]) -> None:
        """Close the triggers nobody served; those the catalog refuses go back to the queue, retried."""
        for done, (trigger_id, reason) in enumerate(expire):
            try:
                triggers.expire_triggers(db, [trigger_id], reason)
            except Exception:
                with self._cond:
                    self._expire[:0] = expire[done:]
                raise

    def _store_snapshots(self, batch: list[tuple[InspectionEvent, bytes | None]]) -> list[InspectionEvent]:
        events: list[InspectionEvent] = []
        wrote = False
        low_disk = self._disk_low() if any(jpeg for _, jpeg in batch) else False
        for event, jpeg in batch:
            with self._cond:
                self._pending_bytes -= len(jpeg) if jpeg else 0
            if jpeg is None:
                events.append(event)
                continue
            if low_disk:
                self.stats.snapshots_dropped += 1
                events.append(_without_snapshot(event, "disk_reserve"))
                continue
            self._serial += 1
            relpath = retention.snapshot_relpath(event.camera_id, event.ts, self._serial)
            try:
                write_unsynced(retention.events_root(self.config.data_path) / relpath, jpeg)
            except OSError:
                logger.exception("could not write an event snapshot; keeping the event without it")
                self.stats.snapshots_dropped += 1
                events.append(_without_snapshot(event, "write_failed"))
                continue
            wrote = True
            events.append(msgspec.structs.replace(event, snapshot=relpath, snapshot_bytes=len(jpeg)))
        if wrote:
            sync_filesystem(retention.events_root(self.config.data_path))
        return events

    def _disk_low(self) -> bool:
        if self._below_reserve():
            self._pruner.poke()
            return True
        return False

    def _below_reserve(self) -> bool:
        free = shutil.disk_usage(self.config.data_path).free
        self.stats.below_reserve = free < self.config.disk_min_free_mb * retention.MB
        return self.stats.below_reserve

    def _failed(self, exc: Exception, carried: int) -> None:
        """A write the catalog refused: counted, in the status, and logged once a minute while it lasts."""
        stats, now = self.stats, time.time()
        stats.failures += 1
        stats.last_error = str(exc)[:500]
        if stats.failing_since is None:
            stats.failing_since = now
            self._logged_failure_at = now
            logger.error("writing %s inspection events failed; retrying", carried, exc_info=exc)
        elif now - self._logged_failure_at >= FAILURE_LOG_EVERY_S:
            self._logged_failure_at = now
            logger.warning(
                "inspection events still cannot be written since %.0f s (%s); %s held in memory",
                now - stats.failing_since, stats.last_error, self.held,
            )  # fmt: skip

    def _writing_again(self) -> None:
        if self.stats.failing_since is not None:
            logger.info(
                "the catalog accepts inspection events again after %.0f s of refusals",
                time.time() - self.stats.failing_since,
            )
            self.stats.failing_since = None


def _after_retention(db: Database) -> None:
    triggers.prune_triggers(db, time.time() - PRUNE_TRIGGERS_AFTER_S)
    revisions.prune_unreferenced(db)  # settings revisions no event names any more


def _without_snapshot(event: InspectionEvent, why: SnapshotMissing) -> InspectionEvent:
    return msgspec.structs.replace(event, snapshot_missing=why)
