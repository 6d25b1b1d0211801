"""The one writer of inspection events (`record_events`) with its hook list, and the reads of the history.

Outputs to the line register a hook once (`ON_EVENT_WRITTEN.append(queue_outbox_rows)`): it runs inside the
transaction that inserts the events, so an event and whatever the hook writes (its outbox rows) commit
together or not at all. A hook that raises rolls the events back and the error reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from appliance.db import Database, write_transaction
from appliance.errors import NotFound
from appliance.stations import revisions
from appliance.stations.contracts import EventRow, InspectionEvent

logger = logging.getLogger(__name__)

EventHook = Callable[[Database, list[EventRow]], None]
ON_EVENT_WRITTEN: list[EventHook] = []

COLUMNS = (
    "camera_id", "ts", "mode", "trigger_id", "verdict", "failing_rules", "counts", "detections", "zones",
    "model_id", "latencies", "width", "height", "snapshot", "snapshot_bytes", "camera_features",
    "settings_revision", "model_version",
)  # fmt: skip
JSON_COLUMNS = {"failing_rules", "counts", "detections", "zones", "latencies", "camera_features"}
_INSERT = f"INSERT INTO inspection_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_encoder = msgspec.json.Encoder()


def _values(event: InspectionEvent) -> list[Any]:
    values = []
    for name in COLUMNS:
        value = getattr(event, name)
        values.append(_encoder.encode(value).decode() if name in JSON_COLUMNS else value)
    return values


def record_events(db: Database, events: list[InspectionEvent]) -> list[int]:
    """Insert the events in one write transaction, close their triggers, run the hooks; returns the ids."""
    if not events:
        return []
    with write_transaction(db):
        ids: list[int] = []
        rows: list[EventRow] = []
        for event in events:
            event_id = db.execute(_INSERT, _values(event)).lastrowid
            assert event_id is not None
            ids.append(event_id)
            rows.append(EventRow(id=event_id, **msgspec.structs.asdict(event)))
            if event.trigger_id is not None:
                db.execute(
                    "UPDATE inspection_triggers SET status = 'done', event_id = ? WHERE id = ?",
                    [event_id, event.trigger_id],
                )
        revisions.mark_referenced(db, rows)
        for hook in ON_EVENT_WRITTEN:
            hook(db, rows)
    return ids


# --- reads ----------------------------------------------------------------------------------------

_ROW_DECODER = msgspec.json.Decoder(EventRow)


def row_to_event(row: dict[str, Any]) -> EventRow:
    # The JSON columns are spliced in as they are stored: one decode, typed by the contract.
    parts = []
    for key, value in row.items():
        if key in JSON_COLUMNS:
            parts.append(f'"{key}":{value}')
        else:
            parts.append(f'"{key}":{_encoder.encode(value).decode()}')
    return _ROW_DECODER.decode("{" + ",".join(parts) + "}")


def get_event(db: Database, event_id: int) -> EventRow:
    row = next(db.query("SELECT * FROM inspection_events WHERE id = ?", [event_id]), None)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row_to_event(row)


def list_events(
    db: Database,
    *,
    camera_id: int | None = None,
    verdict: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[EventRow]:
    """Newest first, keyset-paginated by id (`before_id`); `after_id` lists newer ones oldest first."""
    where, args = [], []
    for clause, value in (
        ("camera_id = ?", camera_id),
        ("verdict = ?", verdict),
        ("ts >= ?", since),
        ("ts < ?", until),
        ("id < ?", before_id),
        ("id > ?", after_id),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    order = "ASC" if after_id is not None else "DESC"
    sql = "SELECT * FROM inspection_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id {order} LIMIT ?"
    return [row_to_event(row) for row in db.query(sql, [*args, limit])]


def counters(db: Database, since: float, camera_id: int | None = None) -> dict[int, dict[str, int]]:
    """{camera_id: {"ok": n, "ng": n}} of the events since a unix time (a shift's totals)."""
    sql = "SELECT camera_id, verdict, COUNT(*) FROM inspection_events WHERE ts >= ?"
    args: list[Any] = [since]
    if camera_id is not None:
        sql += " AND camera_id = ?"
        args.append(camera_id)
    out: dict[int, dict[str, int]] = {}
    for cam, verdict, count in db.execute(sql + " GROUP BY camera_id, verdict", args).fetchall():
        out.setdefault(cam, {"ok": 0, "ng": 0})[verdict] = count
    return out


def latest_event_id(db: Database) -> int:
    row = db.execute("SELECT MAX(id) FROM inspection_events").fetchone()
    return int(row[0] or 0)


__all__ = [
    "ON_EVENT_WRITTEN",
    "EventHook",
    "counters",
    "get_event",
    "list_events",
    "record_events",
]
