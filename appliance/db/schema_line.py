"""Catalog migrations m006 on: stations and events, model visibility, line outputs, bulk box stats."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements
from appliance.db.schema_catalog import BOX_STATS_ON_INSERT, CLASS_STATUS_ON_INSERT


@migrations()
def m006_stations(db: Database) -> None:
    # Inspection stations: cameras (settings as JSON), trigger requests, inspection events.
    # The single-camera settings row of earlier builds goes away (cameras replace it).
    run_statements(
        db,
        """
DELETE FROM settings WHERE key = 'camera';
CREATE TABLE cameras (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE,
  enabled INTEGER NOT NULL DEFAULT 0,
  settings TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE inspection_triggers (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES cameras(id) ON DELETE CASCADE,
  source TEXT NOT NULL,
  requested_at REAL NOT NULL,
  requested_mono REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'expired')),
  event_id INTEGER,
  detail TEXT
);
CREATE INDEX inspection_triggers_status ON inspection_triggers (status, id);
CREATE TABLE inspection_events (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL,
  ts REAL NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('continuous', 'triggered', 'interval')),
  trigger_id INTEGER,
  verdict TEXT NOT NULL CHECK (verdict IN ('ok', 'ng')),
  failing_rules TEXT NOT NULL DEFAULT '[]',
  counts TEXT NOT NULL DEFAULT '{}',
  detections TEXT NOT NULL DEFAULT '[]',
  zones TEXT NOT NULL DEFAULT '[]',
  model_id INTEGER,
  latencies TEXT NOT NULL DEFAULT '{}',
  width INTEGER NOT NULL DEFAULT 0,
  height INTEGER NOT NULL DEFAULT 0,
  snapshot TEXT,
  snapshot_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX inspection_events_camera ON inspection_events (camera_id, id);
CREATE INDEX inspection_events_ts ON inspection_events (ts);
CREATE INDEX inspection_events_counters ON inspection_events (camera_id, ts, verdict)
""",
    )


@migrations()
def m007_model_visibility(db: Database) -> None:
    # A model's visibility is its own (owner, public flag copied from its dataset at training time), so it
    # survives the dataset's deletion. Existing rows: from their dataset while it exists; a model whose dataset
    # is gone already is private to whoever trained it (admins see every model).
    run_statements(
        db,
        """
ALTER TABLE models ADD COLUMN owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE models ADD COLUMN is_public INTEGER NOT NULL DEFAULT 0;
UPDATE models SET
  owner_id = COALESCE((SELECT owner_id FROM datasets WHERE datasets.id = models.dataset_id), created_by),
  is_public = COALESCE((SELECT is_public FROM datasets WHERE datasets.id = models.dataset_id), 0);
CREATE INDEX models_owner ON models(owner_id)
""",
    )


@migrations()
def m008_line_outputs(db: Database) -> None:
    # Line outputs (MQTT, webhooks, OPC UA, Modbus TCP) and their durable outbox: one row per event and enabled
    # output, written in the event's own transaction; secrets are kept apart from the settings anyone reads.
    run_statements(
        db,
        """
CREATE TABLE outputs (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE,
  kind TEXT NOT NULL CHECK (kind IN ('mqtt', 'webhook', 'opcua', 'modbus')),
  enabled INTEGER NOT NULL DEFAULT 1,
  settings TEXT NOT NULL,
  secrets TEXT NOT NULL DEFAULT '{}',
  revision INTEGER NOT NULL DEFAULT 1,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE output_outbox (
  id INTEGER PRIMARY KEY,
  output_id INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
  event_id INTEGER NOT NULL,
  camera_id INTEGER NOT NULL,
  payload BLOB NOT NULL,
  queued_at REAL NOT NULL
);
CREATE INDEX output_outbox_order ON output_outbox (output_id, id);
CREATE TABLE output_stats (
  output_id INTEGER PRIMARY KEY REFERENCES outputs(id) ON DELETE CASCADE,
  backlog INTEGER NOT NULL DEFAULT 0,
  dropped INTEGER NOT NULL DEFAULT 0,
  delivered INTEGER NOT NULL DEFAULT 0,
  last_delivery_at REAL,
  last_event_id INTEGER
);
CREATE TABLE output_camera_state (
  output_id INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
  camera_id INTEGER NOT NULL,
  state TEXT NOT NULL,
  PRIMARY KEY (output_id, camera_id)
)
""",
    )


@migrations()
def m009_bulk_box_stats(db: Database) -> None:
    """Bulk imports keep the box stats themselves: while a row sits in stats_deferred (only ever inside the
    writer's own transaction), the per-box stats triggers stand aside and the writer applies the batch's
    totals in a few statements (catalog/boxes.py insert_new_boxes) instead of five per box."""
    run_statements(
        db,
        """
CREATE TABLE stats_deferred (token INTEGER PRIMARY KEY);
DROP TRIGGER annotations_stats_insert;
CREATE TRIGGER annotations_stats_insert AFTER INSERT ON annotations
  WHEN NOT EXISTS (SELECT 1 FROM stats_deferred) BEGIN
"""
        + BOX_STATS_ON_INSERT
        + """END;
DROP TRIGGER annotations_class_status_insert;
CREATE TRIGGER annotations_class_status_insert AFTER INSERT ON annotations
  WHEN NOT EXISTS (SELECT 1 FROM stats_deferred)
   AND (SELECT COUNT(*) FROM annotations WHERE image_id = NEW.image_id AND class_id = NEW.class_id) = 1 BEGIN
"""
        + CLASS_STATUS_ON_INSERT
        + """END
""",
    )
