"""One sender thread per enabled output: oldest outbox messages first, handed to the output's connector, removed
from the outbox only once the other side has them; failures back off exponentially and keep the messages.

Removing delivered messages is a catalog write. When the catalog refuses it (the data disk is full), the sender
keeps where it got to in memory (the last delivered message and how many), goes on delivering what follows,
and retries the removal with backoff until it commits: nothing is sent twice meanwhile, and a restart before
then sends those messages again (at least once; consumers de-duplicate by event id).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.db import Database, open_database
from appliance.outputs import outbox
from appliance.outputs.connector import Connector, DeliveryError
from appliance.outputs.contracts import OutboxItem

logger = logging.getLogger(__name__)

BATCH = 100
IDLE_WAIT_S = 1.0  # a missed wake-up costs at most this
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
MARK_BACKOFF_MAX_S = 5.0  # removing delivered messages again: a cheap write, tried soon after space returns
MARK_LOG_EVERY_S = 60.0


@dataclass
class Unmarked:
    """Messages the other side has that are still in the outbox (the catalog refused their removal)."""

    last: OutboxItem | None = None
    count: int = 0
    failing_since: float | None = None  # unix time the removal was first refused
    error: str = ""
    next_try: float = 0.0  # time.monotonic()
    backoff: float = BACKOFF_FIRST_S
    logged_at: float = 0.0


class Sender:
    def __init__(self, output_id: int, revision: int, db_path: Path) -> None:
        self.output_id = output_id
        self.revision = revision
        self.db_path = db_path
        self.connector: Connector | None = None
        self.wake = threading.Event()  # new outbox rows may be there
        self.ready = threading.Event()  # the connector (re)connected: retry now instead of after the backoff
        self.unmarked = Unmarked()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outputs-send-{output_id}", daemon=True)

    def start(self, connector: Connector) -> Sender:
        self.connector = connector
        connector.start()
        self._thread.start()
        return self

    def note(self) -> str:
        """In words while delivered messages cannot be marked as delivered; "" otherwise."""
        unmarked = self.unmarked
        if unmarked.failing_since is None:
            return ""
        why = "the data disk is full" if "full" in unmarked.error else unmarked.error
        return (
            f"output {self.output_id} delivered {unmarked.count} messages it cannot mark as delivered yet ({why});"
            " it goes on delivering and marks them once the catalog accepts the write"
        )

    def _run(self) -> None:
        assert self.connector is not None
        connector = self.connector
        db = open_database(self.db_path)
        backoff = BACKOFF_FIRST_S
        try:
            while not self._stop.is_set():
                self.wake.clear()
                self._mark(db)
                after = self.unmarked.last.id if self.unmarked.last is not None else 0
                try:
                    items = outbox.pending(db, self.output_id, BATCH, after_id=after)
                except Exception:
                    logger.exception("output %s: reading the outbox failed", self.output_id)
                    self._stop.wait(1.0)
                    continue
                if not items:
                    self.wake.wait(self._idle_wait())
                    continue
                self.ready.clear()
                try:
                    done = connector.deliver(items)
                except DeliveryError as exc:
                    self._failed(str(exc), backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                except Exception as exc:
                    logger.exception("output %s: delivery failed", self.output_id)
                    self._failed(f"{type(exc).__name__}: {exc}", backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                backoff = BACKOFF_FIRST_S
                if done:
                    self.unmarked.last = items[done - 1]
                    self.unmarked.count += done
                    self.unmarked.next_try = 0.0  # mark them now (the common case: at once)
        finally:
            self.unmarked.next_try = 0.0
            self._mark(db)  # a last try: what stays unmarked is sent again after a restart
            if self.unmarked.count:
                logger.warning(
                    "output %s: %s delivered messages could not be marked as delivered (%s); they will be sent "
                    "again",
                    self.output_id, self.unmarked.count, self.unmarked.error,
                )  # fmt: skip
            db.conn.close()

    def _idle_wait(self) -> float:
        if not self.unmarked.count:
            return IDLE_WAIT_S
        return max(0.01, min(IDLE_WAIT_S, self.unmarked.next_try - time.monotonic()))

    def _mark(self, db: Database) -> None:
        """Remove the delivered messages from the outbox (with the connector's state), when due."""
        unmarked = self.unmarked
        if unmarked.last is None or time.monotonic() < unmarked.next_try:
            return
        assert self.connector is not None
        try:
            outbox.ack_through(db, self.output_id, unmarked.last, unmarked.count, also=self.connector.persist)
        except Exception as exc:
            self._mark_failed(exc)
            return
        if unmarked.failing_since is not None:
            logger.info(
                "output %s: %s delivered messages marked after %.0f s of refusals",
                self.output_id, unmarked.count, time.time() - unmarked.failing_since,
            )  # fmt: skip
        self.unmarked = Unmarked()

    def _mark_failed(self, exc: Exception) -> None:
        unmarked, now = self.unmarked, time.time()
        unmarked.error = str(exc)[:500]
        unmarked.next_try = time.monotonic() + unmarked.backoff
        unmarked.backoff = min(unmarked.backoff * 2, MARK_BACKOFF_MAX_S)
        assert self.connector is not None
        state = self.connector.state
        state.last_error = f"delivered, but cannot mark as delivered: {unmarked.error}"[:500]
        state.last_error_at = now
        if unmarked.failing_since is None:
            unmarked.failing_since = unmarked.logged_at = now
            logger.error(
                "output %s: marking %s messages as delivered failed",
                self.output_id, unmarked.count, exc_info=exc,
            )  # fmt: skip
        elif now - unmarked.logged_at >= MARK_LOG_EVERY_S:
            unmarked.logged_at = now
            logger.warning(
                "output %s: %s delivered messages still not marked (%s)",
                self.output_id, unmarked.count, unmarked.error,
            )  # fmt: skip

    def _failed(self, message: str, backoff: float) -> None:
        assert self.connector is not None
        state = self.connector.state
        state.last_error = message[:500]
        state.last_error_at = time.time()
        logger.warning("output %s: %s; retrying in %.1f s", self.output_id, message, backoff)
        self.ready.wait(backoff)

    def close(self) -> None:
        self._stop.set()
        self.wake.set()
        self.ready.set()
        self._thread.join(15)
        if self.connector is not None:
            self.connector.close()
