"""Server-sent events for any job: stream job_events rows by polling the catalog with a cursor.

Usable by every job kind's controller:

    return job_events_response(config.db_path, job_id, last_event_id(request, after))

Each event is a default ("message") SSE event with `id:` = the job_events row id (so EventSource's
automatic reconnect resumes after Last-Event-ID) and data `{"id", "kind", "at", "data"}`. When the job has
ended and every event was sent, one last `{"kind": "end", "status": ...}` is sent and the stream closes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from litestar import Request
from litestar.response import ServerSentEvent, ServerSentEventMessage

from appliance.db import Database, open_database
from appliance.jobs import service
from appliance.streams import StreamSlots

POLL_S = 0.5
KEEPALIVE_S = 15.0
BATCH = 500
MAX_EVENT_ID = 2**63 - 1  # SQLite's largest integer; a bigger cursor would fail inside the stream


def last_event_id(request: Request[Any, Any, Any], after: int = 0) -> int:
    """The cursor: the Last-Event-ID header of a reconnecting EventSource, else the `after` query value.

    A header that is not an event id (not digits, or beyond any row id) is ignored, as a browser would."""
    header = request.headers.get("last-event-id", "").strip()
    after = min(after, MAX_EVENT_ID)
    if header.isdigit() and len(header) <= 19 and int(header) <= MAX_EVENT_ID:
        return max(int(header), after)
    return after


def _fetch(db: Database, job_id: int, after: int) -> tuple[str | None, list[dict[str, Any]]]:
    # Status first: a terminal status is committed together with its last event, so after reading the
    # status, draining the events gives everything up to the end.
    row = db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
    status = row[0] if row else None
    return status, service.events_since(db, job_id, after, BATCH)


async def job_event_stream(
    db_path: Path, job_id: int, after: int = 0, poll_s: float = POLL_S, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[ServerSentEventMessage]:
    db = await anyio.to_thread.run_sync(open_database, db_path)
    try:
        cursor = after
        last_sent = time.monotonic()
        while True:
            status, events = await anyio.to_thread.run_sync(_fetch, db, job_id, cursor)
            for event in events:
                cursor = event["id"]
                yield ServerSentEventMessage(data=json.dumps(event), id=str(event["id"]))
            if events:
                last_sent = time.monotonic()
            if len(events) == BATCH:
                continue
            if status is None or status in service.TERMINAL:
                yield ServerSentEventMessage(
                    data=json.dumps({"id": cursor, "kind": "end", "status": status}), id=str(cursor)
                )
                return
            if time.monotonic() - last_sent >= keepalive_s:
                last_sent = time.monotonic()
                yield ServerSentEventMessage(comment="keep-alive")
            await anyio.sleep(poll_s)
    finally:
        db.conn.close()


def job_events_response(
    db_path: Path, job_id: int, after: int = 0, *, slots: StreamSlots | None = None, user_id: int = 0
) -> ServerSentEvent:
    """The stream of a job's events; with `slots`, it holds one of the user's live-stream slots (429 if none)."""
    stream = job_event_stream(db_path, job_id, after)
    if slots is not None:
        stream = slots.hold_while(slots.take(user_id), stream)
    return ServerSentEvent(
        stream,
        retry_duration=3000,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
