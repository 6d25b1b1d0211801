"""The durable outbox: each event queued for each enabled output inside the event's own transaction, read in
order by that output's sender, removed when delivered, bounded per output (oldest dropped and counted).

`install(config)` registers `queue_rows` on `appliance.stations.events.ON_EVENT_WRITTEN` in the process that
writes events (the camera process's event writer): an event and its outbox rows commit together or not at all.
"""

from __future__ import annotations

import datetime
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import ConfigError
from appliance.outputs.contracts import LATENCY_KEYS, EventMessage, Latencies, OutboxItem
from appliance.stations import events
from appliance.stations.contracts import EventRow

logger = logging.getLogger(__name__)

BOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_encoder = msgspec.json.Encoder()


class OutboxSettings(msgspec.Struct):
    box_id: str
    max_rows: int


_settings: OutboxSettings | None = None


def box_id(config: Config) -> str:
    """The configured box_id, or the hostname; refused when it could break a topic (/, +, #, spaces)."""
    value = config.box_id or socket.gethostname().split(".")[0] or "appliance"
    if not BOX_ID.fullmatch(value):
        raise ConfigError(
            f"box_id {value!r}: 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-' (it is part of MQTT topics)"
        )
    return value


def install(config: Config) -> None:
    """Queue outbox rows with every event this process writes (once per process; the settings are replaced)."""
    global _settings
    if config.outbox_max_rows < 1:
        raise ConfigError("outbox_max_rows must be at least 1")
    _settings = OutboxSettings(box_id=box_id(config), max_rows=config.outbox_max_rows)
    if queue_rows not in events.ON_EVENT_WRITTEN:
        events.ON_EVENT_WRITTEN.append(queue_rows)


def event_message(row: EventRow, box: str, camera_name: str) -> EventMessage:
    return EventMessage(
        box_id=box,
        event_id=row.id,
        camera_id=row.camera_id,
        camera_name=camera_name,
        ts=row.ts,
        time=datetime.datetime.fromtimestamp(row.ts, datetime.UTC).isoformat(timespec="milliseconds"),
        mode=row.mode,
        trigger_id=row.trigger_id,
        verdict=row.verdict,
        failing_rules=row.failing_rules,
        counts=row.counts,
        model_id=row.model_id,
        # Every event since these four were measured has them; a key missing from an older row reads 0.
        latencies=Latencies(**{key: float(row.latencies.get(key, 0.0)) for key in LATENCY_KEYS}),
        width=row.width,
        height=row.height,
        snapshot_url=f"/api/v1/events/{row.id}/snapshot" if row.snapshot else None,
        settings_revision=row.settings_revision,
        model_version=row.model_version,
        snapshot_missing=row.snapshot_missing,
    )


def _camera_filter(settings_json: str) -> set[int]:
    try:
        return set(msgspec.json.decode(settings_json).get("camera_ids") or [])
    except (msgspec.DecodeError, AttributeError):
        return set()


def queue_rows(db: Database, rows: list[EventRow]) -> None:
    """The ON_EVENT_WRITTEN hook: runs inside the transaction that inserts the events."""
    if _settings is None or not rows:
        return
    outputs = db.execute("SELECT id, settings FROM outputs WHERE enabled = 1 ORDER BY id").fetchall()
    if not outputs:
        return
    names = dict(db.execute("SELECT id, name FROM cameras").fetchall())
    now = time.time()
    payloads = [
        _encoder.encode(event_message(row, _settings.box_id, names.get(row.camera_id, ""))) for row in rows
    ]
    for output_id, settings_json in outputs:
        only = _camera_filter(settings_json)
        values = [
            (output_id, row.id, row.camera_id, payload, now)
            for row, payload in zip(rows, payloads, strict=True)
            if not only or row.camera_id in only
        ]
        if not values:
            continue
        db.conn.executemany(
            "INSERT INTO output_outbox (output_id, event_id, camera_id, payload, queued_at) VALUES (?, ?, ?, ?, ?)",
            values,
        )
        db.execute(
            "INSERT INTO output_stats (output_id, backlog) VALUES (?, ?) "
            "ON CONFLICT (output_id) DO UPDATE SET backlog = backlog + excluded.backlog",
            [output_id, len(values)],
        )
        _bound(db, output_id, _settings.max_rows)


def _bound(db: Database, output_id: int, max_rows: int) -> None:
    backlog = db.execute("SELECT backlog FROM output_stats WHERE output_id = ?", [output_id]).fetchone()[0]
    if backlog <= max_rows:
        return
    dropped = db.execute(
        "DELETE FROM output_outbox WHERE id IN (SELECT id FROM output_outbox WHERE output_id = ? ORDER BY id LIMIT ?)",
        [output_id, backlog - max_rows],
    ).rowcount
    db.execute(
        "UPDATE output_stats SET backlog = backlog - ?, dropped = dropped + ? WHERE output_id = ?",
        [dropped, dropped, output_id],
    )
    logger.warning("output %s: backlog past %s, dropped the %s oldest messages", output_id, max_rows, dropped)


def pending(db: Database, output_id: int, limit: int, after_id: int = 0) -> list[OutboxItem]:
    """The oldest undelivered messages of an output, in order."""
    rows = db.execute(
        "SELECT id, output_id, event_id, camera_id, payload FROM output_outbox WHERE output_id = ? AND id > ? "
        "ORDER BY id LIMIT ?",
        [output_id, after_id, limit],
    ).fetchall()
    return [
        OutboxItem(id=r[0], output_id=r[1], event_id=r[2], camera_id=r[3], payload=bytes(r[4])) for r in rows
    ]


def ack(
    db: Database, output_id: int, delivered: list[OutboxItem], also: Callable[[Database], Any] | None = None
) -> None:
    """Remove delivered messages and count them; `also` writes in the same transaction (server state)."""
    if delivered:
        ack_through(db, output_id, delivered[-1], len(delivered), also)


def ack_through(
    db: Database, output_id: int, last: OutboxItem, count: int, also: Callable[[Database], Any] | None = None
) -> None:
    """Remove the output's messages up to `last`, `count` of them delivered (ack of a whole delivered run)."""
    with write_transaction(db):
        removed = db.execute(
            "DELETE FROM output_outbox WHERE output_id = ? AND id <= ?", [output_id, last.id]
        ).rowcount
        db.execute(
            "INSERT INTO output_stats (output_id) VALUES (?) ON CONFLICT (output_id) DO NOTHING", [output_id]
        )
        db.execute(
            "UPDATE output_stats SET backlog = MAX(0, backlog - ?), delivered = delivered + ?, "
            "last_delivery_at = ?, last_event_id = ? WHERE output_id = ?",
            [removed, count, time.time(), last.event_id, output_id],
        )
        if also is not None:
            also(db)


class OutboxStats(msgspec.Struct, kw_only=True):
    backlog: int = 0
    dropped: int = 0
    delivered: int = 0
    last_delivery_at: float | None = None
    last_event_id: int | None = None


def stats(db: Database) -> dict[int, OutboxStats]:
    rows = db.query("SELECT * FROM output_stats")
    return {row.pop("output_id"): msgspec.convert(row, OutboxStats) for row in rows}


__all__ = ["ack", "ack_through", "box_id", "event_message", "install", "pending", "queue_rows", "stats"]
