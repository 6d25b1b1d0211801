"""Catalog migrations m025-m029: machine-vision cameras (GigE Vision / USB3 Vision through Aravis)."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m025_event_camera_features(db: Database) -> None:
    # The camera's feature values behind each verdict (exposure, gain, pixel format, trigger, the camera's frame
    # id and timestamp), JSON; 'null' for events of other sources. A constant default: no table rewrite.
    run_statements(
        db, "ALTER TABLE inspection_events ADD COLUMN camera_features TEXT NOT NULL DEFAULT 'null'"
    )
