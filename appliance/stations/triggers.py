"""Trigger requests: one function every trigger source calls (HTTP route, MQTT, Modbus, OPC UA).

A trigger is a row in `inspection_triggers` stamped with the requester's clocks; the camera process picks
pending rows up within a few milliseconds and inspects the first frame that arrived after
`requested_mono` (CLOCK_MONOTONIC is one clock for every process of the box), then closes the row with the
event's id in the event's own transaction. A trigger nobody inspects in TRIGGER_TIMEOUT_S is expired.
"""

from __future__ import annotations

import re
import time
from typing import Protocol, runtime_checkable

import msgspec

from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound
from appliance.stations.contracts import TriggerRow

TRIGGER_TIMEOUT_S = 10.0
SOURCE_PATTERN = re.compile(r"[a-z0-9_.-]{1,32}")


@runtime_checkable
class TriggerTarget(Protocol):
    """Something that takes triggers directly (the camera process's runtime, for outputs living in it)."""

    def request_trigger(self, camera_id: int, source: str) -> int: ...


def insert_trigger(db: Database, camera_id: int, source: str) -> int:
    if not SOURCE_PATTERN.fullmatch(source):
        raise Invalid("source: 1-32 characters of a-z, 0-9, '_', '.', '-'")
    with write_transaction(db):
        row = db.execute("SELECT enabled FROM cameras WHERE id = ?", [camera_id]).fetchone()
        if row is None:
            raise NotFound(f"camera {camera_id} not found")
        if not row[0]:
            raise Conflict(f"camera {camera_id} is stopped: start it before triggering an inspection")
        trigger_id = db.execute(
            "INSERT INTO inspection_triggers (camera_id, source, requested_at, requested_mono) VALUES (?, ?, ?, ?)",
            [camera_id, source, time.time(), time.monotonic()],
        ).lastrowid
    assert trigger_id is not None
    return trigger_id


def request_trigger(target: Database | TriggerTarget, camera_id: int, source: str) -> int:
    """Ask for one inspection of the camera's next frame; returns the trigger id (404 / 409 / 422)."""
    if isinstance(target, Database):
        return insert_trigger(target, camera_id, source)
    return target.request_trigger(camera_id, source)


def get_trigger(db: Database, camera_id: int, trigger_id: int) -> TriggerRow:
    row = next(
        db.query("SELECT * FROM inspection_triggers WHERE id = ? AND camera_id = ?", [trigger_id, camera_id]),
        None,
    )
    if row is None:
        raise NotFound(f"trigger {trigger_id} of camera {camera_id} not found")
    return msgspec.convert(row, TriggerRow)


def pending_triggers(db: Database, after_id: int) -> list[TriggerRow]:
    rows = db.query(
        "SELECT * FROM inspection_triggers WHERE id > ? AND status = 'pending' ORDER BY id LIMIT 1000",
        [after_id],
    )
    return [msgspec.convert(row, TriggerRow) for row in rows]


def expire_triggers(db: Database, trigger_ids: list[int], detail: str) -> None:
    if not trigger_ids:
        return
    with write_transaction(db):
        db.execute(
            f"UPDATE inspection_triggers SET status = 'expired', detail = ? "
            f"WHERE status = 'pending' AND id IN ({', '.join('?' for _ in trigger_ids)})",
            [detail[:500], *trigger_ids],
        )


def prune_triggers(db: Database, older_than: float) -> int:
    """Closed trigger rows older than a unix time (the events keep their trigger ids)."""
    with write_transaction(db):
        cursor = db.execute(
            "DELETE FROM inspection_triggers WHERE status != 'pending' AND requested_at < ?", [older_than]
        )
    return cursor.rowcount


__all__ = ["TRIGGER_TIMEOUT_S", "TriggerTarget", "get_trigger", "request_trigger"]
