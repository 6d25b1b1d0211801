"""The event writer: the one thread of the camera process that stores inspection events.

Camera loops hand events off with `submit` (never blocking); this thread writes their snapshots (temp file
+ rename, then one syncfs for the batch), calls `record_events` for the batch in one transaction and expires
triggers nobody served; the retention runs beside it on a thread of its own (`retention.Pruner`). Bounded:
past MAX_PENDING_BYTES of queued snapshots an event is kept without its snapshot, past MAX_PENDING events it
is dropped; both are counted in the status.
A catalog that refuses the batch (busy, disk full) is retried with backoff; the batch is kept meanwhile.
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
from appliance.stations.contracts import InspectionEvent
from appliance.stations.events import record_events
from appliance.storage import sync_filesystem, write_unsynced

logger = logging.getLogger(__name__)

MAX_PENDING = 20_000
MAX_PENDING_BYTES = 64 * 1024 * 1024
BATCH = 256
PRUNE_TRIGGERS_AFTER_S = 7 * 86_400


@dataclass
class WriterStats:
    written: int = 0
    snapshots_dropped: int = 0  # kept as events without a snapshot (queue or disk full)
    events_dropped: int = 0  # never written: the queue was full
    failures: int = 0
    last_error: str | None = None


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

    # --- the thread ----------------------------------------------------------------------------------

    _busy = False

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
                    for trigger_id, reason in expire:
                        triggers.expire_triggers(db, [trigger_id], reason)
                    events = carried or self._store_snapshots(batch)
                    carried = events
                    record_events(db, events)
                    with self._cond:
                        self.stats.written += len(events)
                    carried = []
                    backoff = 0.1
                except Exception as exc:  # busy catalog, disk full, a failing hook: keep the batch, retry
                    self.stats.failures += 1
                    self.stats.last_error = str(exc)[:500]
                    logger.exception("writing %s inspection events failed; retrying", len(carried))
                    if self._stop.wait(backoff) and not carried:
                        break
                    backoff = min(backoff * 2, 5.0)
                finally:
                    with self._cond:
                        self._busy = bool(carried)
            self._pruner.close()
            self._pruner.run_once(db)  # the history is within its limits when the process ends, too
        except Exception:
            logger.exception("the event writer stopped on an error")
        finally:
            db.conn.close()

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
                events.append(event)
                continue
            self._serial += 1
            relpath = retention.snapshot_relpath(event.camera_id, event.ts, self._serial)
            try:
                write_unsynced(retention.events_root(self.config.data_path) / relpath, jpeg)
            except OSError:
                logger.exception("could not write an event snapshot; keeping the event without it")
                self.stats.snapshots_dropped += 1
                events.append(event)
                continue
            wrote = True
            events.append(msgspec.structs.replace(event, snapshot=relpath, snapshot_bytes=len(jpeg)))
        if wrote:
            sync_filesystem(retention.events_root(self.config.data_path))
        return events

    def _disk_low(self) -> bool:
        free = shutil.disk_usage(self.config.data_path).free
        if free < self.config.disk_min_free_mb * retention.MB:
            self._pruner.poke()
            return True
        return False


def _after_retention(db: Database) -> None:
    triggers.prune_triggers(db, time.time() - PRUNE_TRIGGERS_AFTER_S)
    revisions.prune_unreferenced(db)  # settings revisions no event names any more
