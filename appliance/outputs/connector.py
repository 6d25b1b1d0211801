"""What every output kind implements for its sender thread, and the trigger requests they hand to the catalog.

A connector delivers outbox messages in order and says how many of them (a prefix) the other side has
taken; the sender removes exactly those from the outbox. Trigger sources (MQTT messages, the Modbus coil, the
OPC UA method) never touch the catalog on their network thread: they go through `TriggerRequester`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from appliance.db import Database, open_database
from appliance.errors import Unavailable
from appliance.outputs.camera_live import CameraLive
from appliance.outputs.camera_state import ServerState, catalog_cameras
from appliance.outputs.contracts import ConnectorState, OutboxItem
from appliance.stations.triggers import request_trigger

logger = logging.getLogger(__name__)

SettingsT = TypeVar("SettingsT")

MAX_PENDING_TRIGGERS = 64


class DeliveryError(Exception):
    """The other side did not take the messages (not connected, refused, timed out); retried with backoff."""


class Connector(Protocol):
    state: ConnectorState

    def start(self) -> None:
        """Connect or listen in the background; never blocks for long."""

    def deliver(self, items: list[OutboxItem]) -> int:
        """Send in order; returns how many (from the first) were taken. Raises DeliveryError when none was."""

    def persist(self, db: Database) -> None:
        """Writes that must commit with the acknowledgement (servers: their per-camera state)."""

    def cameras_changed(self, cameras: dict[int, CameraLive], changed: set[int]) -> None:
        """Every camera as the line sees it (each poll of the outputs process, and once at start), with the ones
        whose state changed since the last call; never blocks (called from the process's main thread)."""

    def close(self) -> None: ...


def serve_until_stopped(
    state: ConnectorState, serve: Callable[[], Coroutine[Any, Any, None]], what: str, output_id: int
) -> None:
    """A server's asyncio loop on its own thread; a failure (port taken, bad certificate) lands in the state."""
    try:
        asyncio.run(serve())
    except Exception as exc:
        state.connected = False
        state.detail = state.last_error = f"{what}: {exc}"[:500]
        state.last_error_at = time.time()
        logger.exception("output %s: %s", output_id, what)


class ValuesServer(Generic[SettingsT]):
    """What the OPC UA and Modbus outputs share: a server on its own thread and asyncio loop that exposes the
    per-camera values (loaded from the catalog at start, persisted with each acknowledgement)."""

    protocol = ""  # "OPC UA", "Modbus": for messages
    thread_name = ""

    def __init__(
        self, output_id: int, settings: SettingsT, db_path: Path, triggers: TriggerRequester
    ) -> None:
        self.output_id = output_id
        self.settings = settings
        self.db_path = db_path
        self.triggers = triggers
        self.state = ConnectorState(detail="starting")
        self.values = ServerState(output_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"outputs-{self.thread_name}-{output_id}", daemon=True
        )

    @property
    def where(self) -> str:
        raise NotImplementedError

    async def _serve(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        serve_until_stopped(self.state, self._serve, f"cannot listen on {self.where}", self.output_id)

    def _load_cameras(self, db: Database) -> None:
        """The persisted values, and a block for every catalog camera before its first event."""
        self.values.load(db)
        for camera_id, name in catalog_cameras(db).items():
            self.values.camera(camera_id, name)

    def _check_listening(self) -> None:
        if not self._listening.is_set() or self._loop is None:
            raise DeliveryError(
                self.state.last_error or f"the {self.protocol} server is not listening on {self.where}"
            )

    def _listening_now(self) -> None:
        self.state.connected, self.state.connected_at = True, time.time()
        self.state.detail = f"listening on {self.where}"
        self._listening.set()

    def persist(self, db: Database) -> None:
        self.values.persist(db)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)


class TriggerRequester:
    """One thread with its own catalog connection that inserts trigger requests for every trigger source."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="outputs-trigger"
        )
        self._pending = threading.BoundedSemaphore(MAX_PENDING_TRIGGERS)
        self._opened: list[Database] = []

    def _db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_database(self.db_path)
            self._opened.append(db)
        return db

    def _request(self, camera_id: int, source: str) -> int:
        try:
            return request_trigger(self._db(), camera_id, source)
        finally:
            self._pending.release()

    def submit(self, camera_id: int, source: str) -> concurrent.futures.Future[int]:
        """The trigger id, or NotFound / Conflict / Invalid from request_trigger; Unavailable when flooded."""
        if not self._pending.acquire(blocking=False):
            raise Unavailable(f"more than {MAX_PENDING_TRIGGERS} trigger requests waiting: refused")
        return self._pool.submit(self._request, camera_id, source)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for db in self._opened:
            db.conn.close()
