"""Catalog migrations m050-m054: the line on a full disk (why an event has no snapshot)."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m050_event_snapshot_missing(db: Database) -> None:
    # Why an event of a camera that keeps snapshots has none (disk_reserve, write_failed, queue_full); null when
    # it has one or the camera keeps none. Nullable without a default: no table rewrite.
    run_statements(db, "ALTER TABLE inspection_events ADD COLUMN snapshot_missing TEXT")
