"""Long-lived responses (server-sent events, MJPEG, WebSockets) per account: a cap, so one user or one
stolen token cannot hold the web process's connections. Beyond `streams_per_user` a new stream is a 429.

Server-sent events of catalog rows (a job's events, inspection events) poll the catalog with a cursor:
`polled_events` is that loop, `last_event_id` the cursor of a reconnecting EventSource, `sse_response` the
response around it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import anyio
from litestar import Request
from litestar.response import ServerSentEvent, ServerSentEventMessage

from appliance.db import Database, open_database
from appliance.errors import TooManyRequests

T = TypeVar("T")

MAX_EVENT_ID = 2**63 - 1  # SQLite's largest integer; a bigger cursor would fail inside the stream
KEEPALIVE_S = 15.0


class StreamSlots:
    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.open: Counter[int] = Counter()
        self._lock = threading.Lock()

    def take(self, user_id: int) -> Callable[[], None]:
        """Hold one slot of the user's; returns the release (safe to call more than once)."""
        with self._lock:
            if self.open[user_id] >= self.per_user:
                raise TooManyRequests(
                    f"you already have {self.per_user} live streams open (config key streams_per_user); "
                    "close one (another tab?) and try again",
                    headers={"Retry-After": "5"},
                )
            self.open[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.open[user_id] -= 1
                    if self.open[user_id] <= 0:
                        del self.open[user_id]

        return release

    async def hold_while(self, release: Callable[[], None], stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Yield the stream's items; the slot is released when the stream ends or the client leaves."""
        try:
            async for item in stream:
                yield item
        finally:
            release()


def stream_slots(state: Any) -> StreamSlots:
    """The web process's slots (made on first use from the config)."""
    slots = state.get("stream_slots")
    if slots is None:
        slots = StreamSlots(state.config.streams_per_user)
        state.stream_slots = slots
    return slots


def last_event_id(request: Request[Any, Any, Any], after: int = 0) -> int:
    """The cursor: the Last-Event-ID header of a reconnecting EventSource, else the `after` query value.

    A header that is not an event id (not digits, or beyond any row id) is ignored, as a browser would."""
    header = request.headers.get("last-event-id", "").strip()
    after = min(after, MAX_EVENT_ID)
    if header.isdigit() and len(header) <= 19 and int(header) <= MAX_EVENT_ID:
        return max(int(header), after)
    return after


class Polled(NamedTuple):
    items: list[tuple[int, str]]  # (row id, data) after the cursor, in id order
    end: str | None = None  # data of a last message (id: the cursor) after which the stream closes


async def polled_events(
    db_path: Path,
    cursor: int | Callable[[Database], int],
    fetch: Callable[[Database, int], Polled],
    *,
    batch: int,
    poll_s: float,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[ServerSentEventMessage]:
    """Every row `fetch` finds after the cursor, as it is written: `id:` is the row id, so an EventSource
    resumes after a reconnect. A full batch is followed at once; a quiet stream gets a keep-alive comment.
    A callable cursor is computed on the stream's own connection (e.g. "from the newest row on")."""
    db: Database = await anyio.to_thread.run_sync(open_database, db_path)
    try:
        at = cursor if isinstance(cursor, int) else await anyio.to_thread.run_sync(cursor, db)
        last_sent = time.monotonic()
        while True:
            page = await anyio.to_thread.run_sync(fetch, db, at)
            for row_id, data in page.items:
                at = row_id
                yield ServerSentEventMessage(data=data, id=str(row_id))
            if page.end is not None:
                yield ServerSentEventMessage(data=page.end, id=str(at))
                return
            if page.items:
                last_sent = time.monotonic()
                if len(page.items) >= batch:
                    continue
            elif time.monotonic() - last_sent >= keepalive_s:
                last_sent = time.monotonic()
                yield ServerSentEventMessage(comment="keep-alive")
            await anyio.sleep(poll_s)
    finally:
        db.conn.close()


def sse_response(stream: AsyncIterator[ServerSentEventMessage]) -> ServerSentEvent:
    return ServerSentEvent(
        stream, retry_duration=3000, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
