"""Catalog migration m058: a deleted camera's id is never given to a new camera."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements

LAST_DELETED_CAMERA = "cameras.last_deleted_id"


@migrations()
def m058_camera_ids_never_reused(db: Database) -> None:
    """SQLite gives a new row the largest id + 1, so deleting the newest camera handed its id to the next one,
    and that camera inherited the old one's events, counts and revisions in every list and report. A trigger
    keeps the largest id ever deleted (every path that deletes a camera), new cameras are numbered past it
    (stations.cameras.next_camera_id), and boxes of earlier builds start from the largest camera id their
    history names."""
    run_statements(
        db,
        f"""
CREATE TRIGGER cameras_keep_last_deleted_id AFTER DELETE ON cameras
BEGIN
  INSERT INTO settings (key, value, updated_at)
  VALUES ('{LAST_DELETED_CAMERA}', CAST(OLD.id AS TEXT), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
  ON CONFLICT (key) DO UPDATE SET
    value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT),
    updated_at = excluded.updated_at;
END;
INSERT INTO settings (key, value, updated_at)
SELECT '{LAST_DELETED_CAMERA}', CAST(largest AS TEXT), strftime('%Y-%m-%dT%H:%M:%SZ', 'now') FROM (
  SELECT MAX(n) AS largest FROM (
    SELECT MAX(camera_id) AS n FROM inspection_events
    UNION ALL SELECT MAX(camera_id) FROM camera_revisions
    UNION ALL SELECT MAX(camera_id) FROM shadow_events
    UNION ALL SELECT MAX(camera_id) FROM event_counts_minute
    UNION ALL SELECT MAX(camera_id) FROM event_counts_hour
  )
) WHERE largest IS NOT NULL  -- (HAVING without GROUP BY needs SQLite 3.39; JetPack's may be older)
ON CONFLICT (key) DO NOTHING;
""",
    )
