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
from appliance.stations import counts, revisions
from appliance.stations.contracts import EventRow, InspectionEvent

logger = logging.getLogger(__name__)

EventHook = Callable[[Database, list[EventRow]], None]
ON_EVENT_WRITTEN: list[EventHook] = []

COLUMNS = (
    "camera_id", "ts", "mode", "trigger_id", "verdict", "failing_rules", "counts", "detections", "zones",
    "model_id", "latencies", "width", "height", "snapshot", "snapshot_bytes", "camera_features",
    "settings_revision", "model_version",
    "snapshot_missing",
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
        counts.count_written(db, rows)  # the minute/hour counts and rule rows, in the events' transaction
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
    rule: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_id: int | None = None,
    before_ts: float | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[EventRow]:
    """Newest first by time (ts, then id), keyset-paginated: pass the last row's id (and ts) as `before_id`
    (`before_ts`); `after_id` lists the ones written after an id, oldest first (the live stream).

    Every filter is one index read in order (migration m056): camera (camera_id, ts), verdict (verdict, ts),
    both (camera_id, verdict, ts), time (ts), a failing rule (inspection_event_rules: (rule, ts) or
    (camera_id, rule, ts)); a page reads about `limit` entries whatever the size of the history."""
    if after_id is not None:
        return _written_after(db, after_id, camera_id, verdict, limit)
    if before_id is not None and before_ts is None:
        found = db.execute("SELECT ts FROM inspection_events WHERE id = ?", [before_id]).fetchone()
        if found is None:
            return []  # the page's last event went with the retention: nothing older is left either
        before_ts = found[0]
    sql, args = list_query(
        camera_id=camera_id,
        verdict=verdict,
        rule=rule,
        since=since,
        until=until,
        before=None if before_id is None or before_ts is None else (before_ts, before_id),
    )
    return [row_to_event(row) for row in db.query(sql, [*args, limit])]


def list_query(
    *,
    camera_id: int | None = None,
    verdict: str | None = None,
    rule: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before: tuple[float, int] | None = None,
) -> tuple[str, list[Any]]:
    """The SQL of one page (its LIMIT the last parameter, left to the caller) and its arguments."""
    if rule is not None:
        source = "inspection_event_rules k JOIN inspection_events e ON e.id = k.event_id"
        key_ts, key_id, camera_column = "k.ts", "k.event_id", "k.camera_id"
        where: list[str] = ["k.rule = ?"]
        args: list[Any] = [rule]
    else:
        source, key_ts, key_id, camera_column = "inspection_events e", "e.ts", "e.id", "e.camera_id"
        where, args = [], []
    if before is not None and until is not None:
        # One upper bound on the time, not two: with two the planner may take a shorter index.
        if until <= before[0]:
            before = None  # every event before `until` comes before the cursor too
        else:
            until = None  # the cursor's bound is the tighter one
    for clause, value in (
        (f"{camera_column} = ?", camera_id),
        ("e.verdict = ?", verdict),
        (f"{key_ts} >= ?", since),
        (f"{key_ts} < ?", until),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    if before is not None:
        where.append(f"{key_ts} <= ? AND ({key_ts} < ? OR {key_id} < ?)")
        args += [before[0], before[0], before[1]]
    sql = f"SELECT e.* FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY {key_ts} DESC, {key_id} DESC LIMIT ?", args


def _written_after(
    db: Database, after_id: int, camera_id: int | None, verdict: str | None, limit: int
) -> list[EventRow]:
    where: list[str] = ["id > ?"]
    args: list[Any] = [after_id]
    for clause, value in (("camera_id = ?", camera_id), ("verdict = ?", verdict)):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql = f"SELECT * FROM inspection_events WHERE {' AND '.join(where)} ORDER BY id ASC LIMIT ?"
    return [row_to_event(row) for row in db.query(sql, [*args, limit])]


def latest_event_id(db: Database) -> int:
    row = db.execute("SELECT MAX(id) FROM inspection_events").fetchone()
    return int(row[0] or 0)


__all__ = [
    "ON_EVENT_WRITTEN",
    "EventHook",
    "get_event",
    "list_events",
    "record_events",
]
