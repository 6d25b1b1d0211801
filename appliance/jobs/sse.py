"""Server-sent events for any job: stream job_events rows by polling the catalog with a cursor.

Usable by every job kind's controller:

    return job_events_response(config.db_path, job_id, last_event_id(request, after))

Each event is a default ("message") SSE event with `id:` = the job_events row id (so EventSource's
automatic reconnect resumes after Last-Event-ID) and data `{"id", "kind", "at", "data"}`. When the job has
ended and every event was sent, one last `{"kind": "end", "status": ...}` is sent and the stream closes.
"""

from __future__ import annotations

import json
from pathlib import Path

from litestar.response import ServerSentEvent

from appliance.db import Database
from appliance.jobs import service
from appliance.streams import Polled, StreamSlots, polled_events, sse_response

POLL_S = 0.5
BATCH = 500


def _fetch(db: Database, job_id: int, after: int) -> Polled:
    # Status first: a terminal status is committed together with its last event, so after reading the
    # status, draining the events gives everything up to the end.
    row = db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
    status = row[0] if row else None
    events = service.events_since(db, job_id, after, BATCH)
    items = [(event["id"], json.dumps(event)) for event in events]
    end = None
    if len(events) < BATCH and (status is None or status in service.TERMINAL):
        cursor = items[-1][0] if items else after
        end = json.dumps({"id": cursor, "kind": "end", "status": status})
    return Polled(items, end)


def job_events_response(
    db_path: Path, job_id: int, after: int = 0, *, slots: StreamSlots | None = None, user_id: int = 0
) -> ServerSentEvent:
    """The stream of a job's events; with `slots`, it holds one of the user's live-stream slots (429 if none)."""
    stream = polled_events(
        db_path, after, lambda db, cursor: _fetch(db, job_id, cursor), batch=BATCH, poll_s=POLL_S
    )
    if slots is not None:
        stream = slots.hold_while(slots.take(user_id), stream)
    return sse_response(stream)
