"""Catalog migrations m035-m039: camera settings revisions on events (every verdict traceable) and the
hash-chained audit log with its segments."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m035_camera_revisions(db: Database) -> None:
    """Every camera's settings as they were when they judged: a new revision each time they change.

    A revision outlives its camera while an event refers to it (no foreign key: cameras are deleted, their
    events stay). `first_event_id`/`last_event_id` bound the events that name it, so finding whether any is
    left is a primary-key range scan, not an index over ten million events. Cameras of earlier builds get
    their current settings as their first revision."""
    run_statements(
        db,
        """
CREATE TABLE camera_revisions (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL,
  camera_name TEXT NOT NULL,
  settings TEXT NOT NULL,
  created_at TEXT NOT NULL,
  created_by INTEGER,
  created_by_name TEXT NOT NULL DEFAULT '',
  superseded_at REAL,
  first_event_id INTEGER,
  last_event_id INTEGER
);
CREATE INDEX camera_revisions_camera ON camera_revisions (camera_id, id);
ALTER TABLE cameras ADD COLUMN revision_id INTEGER;
ALTER TABLE inspection_events ADD COLUMN settings_revision INTEGER;
ALTER TABLE inspection_events ADD COLUMN model_version TEXT;
INSERT INTO camera_revisions (camera_id, camera_name, settings, created_at, created_by_name)
  SELECT id, name, settings, updated_at, 'before revisions' FROM cameras ORDER BY id;
UPDATE cameras SET revision_id = (
  SELECT MAX(r.id) FROM camera_revisions r WHERE r.camera_id = cameras.id
)
""",
    )


@migrations()
def m036_audit_log(db: Database) -> None:
    """The append-only audit log: each entry's hash covers its fields and the hash before it.

    Entries are grouped in segments by size; retention deletes the oldest closed segment whole and keeps its
    row (range, count, bytes and last hash), so verification starts from that hash after a prune."""
    run_statements(
        db,
        """
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  actor_id INTEGER,
  actor TEXT NOT NULL DEFAULT '',
  role TEXT NOT NULL DEFAULT '',
  address TEXT NOT NULL DEFAULT '',
  process TEXT NOT NULL DEFAULT '',
  action TEXT NOT NULL,
  method TEXT NOT NULL DEFAULT '',
  route TEXT NOT NULL DEFAULT '',
  path TEXT NOT NULL DEFAULT '',
  target TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL DEFAULT 0,
  details TEXT NOT NULL DEFAULT '{}',
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE TABLE audit_segments (
  id INTEGER PRIMARY KEY,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  entries INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  prev_hash TEXT NOT NULL,
  last_hash TEXT NOT NULL,
  opened_at REAL NOT NULL,
  closed_at REAL,
  pruned_at REAL
);
CREATE INDEX audit_segments_live ON audit_segments (id) WHERE pruned_at IS NULL
""",
    )
