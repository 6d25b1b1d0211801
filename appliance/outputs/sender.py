"""One sender thread per enabled output: oldest outbox messages first, handed to the output's connector, removed
from the outbox only once the other side has them; failures back off exponentially and keep the messages."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from appliance.db import open_database
from appliance.outputs import outbox
from appliance.outputs.connector import Connector, DeliveryError

logger = logging.getLogger(__name__)

BATCH = 100
IDLE_WAIT_S = 1.0  # a missed wake-up costs at most this
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class Sender:
    def __init__(self, output_id: int, revision: int, db_path: Path) -> None:
        self.output_id = output_id
        self.revision = revision
        self.db_path = db_path
        self.connector: Connector | None = None
        self.wake = threading.Event()  # new outbox rows may be there
        self.ready = threading.Event()  # the connector (re)connected: retry now instead of after the backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outputs-send-{output_id}", daemon=True)

    def start(self, connector: Connector) -> Sender:
        self.connector = connector
        connector.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.connector is not None
        connector = self.connector
        db = open_database(self.db_path)
        backoff = BACKOFF_FIRST_S
        try:
            while not self._stop.is_set():
                self.wake.clear()
                try:
                    items = outbox.pending(db, self.output_id, BATCH)
                except Exception:
                    logger.exception("output %s: reading the outbox failed", self.output_id)
                    self._stop.wait(1.0)
                    continue
                if not items:
                    self.wake.wait(IDLE_WAIT_S)
                    continue
                self.ready.clear()
                try:
                    done = connector.deliver(items)
                    outbox.ack(db, self.output_id, items[:done], also=connector.persist)
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
        finally:
            db.conn.close()

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
