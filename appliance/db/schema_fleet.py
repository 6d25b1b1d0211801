"""Catalog migrations m040-m049: the fleet (trusted keys, bundle identities, this box's part in rollouts, hard
cases pooled to the store)."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m040_fleet_bundles(db: Database) -> None:
    # Keys whose signed bundles and documents this box accepts (its own key is always trusted), and the bundle
    # identity (name, version) of every model that came in as a bundle or went out as one.
    run_statements(
        db,
        """
CREATE TABLE fleet_trusted_keys (
  key_id TEXT PRIMARY KEY,
  public_key TEXT NOT NULL,
  name TEXT NOT NULL,
  added_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  added_at TEXT NOT NULL
);
CREATE TABLE fleet_models (
  model_id INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  source_box TEXT NOT NULL,
  key_id TEXT NOT NULL,
  bundle_sha256 TEXT NOT NULL,
  origin TEXT NOT NULL CHECK (origin IN ('exported', 'imported')),
  created_at TEXT NOT NULL,
  UNIQUE (name, version)
)
""",
    )


@migrations()
def m041_fleet_rollout_boxes(db: Database) -> None:
    # This box's part in each rollout it took part in: kept here so that a box killed mid-swap resumes where it
    # was (and the store's copy of the report can be written again).
    run_statements(
        db,
        """
CREATE TABLE fleet_rollout_boxes (
  rollout_id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '',
  model_id INTEGER,
  previous_model_id INTEGER,
  deployed_at REAL,
  serving_at REAL,
  health TEXT NOT NULL DEFAULT '{}',
  updated_at REAL NOT NULL
)
""",
    )


@migrations()
def m042_fleet_hard_cases(db: Database) -> None:
    # Hard cases pooled in the store: a sampling rule per camera, the upload queue (one row per event and fleet
    # dataset, kept until the object is in the store), and the store objects already imported into a dataset.
    run_statements(
        db,
        """
CREATE TABLE fleet_sampling_rules (
  camera_id INTEGER PRIMARY KEY REFERENCES cameras(id) ON DELETE CASCADE,
  dataset TEXT NOT NULL,
  ng_percent REAL NOT NULL DEFAULT 0,
  low_confidence_percent REAL NOT NULL DEFAULT 0,
  low_confidence_below REAL NOT NULL DEFAULT 0.5,
  per_hour INTEGER NOT NULL DEFAULT 60,
  enabled INTEGER NOT NULL DEFAULT 1,
  updated_at TEXT NOT NULL
);
CREATE TABLE fleet_uploads (
  id INTEGER PRIMARY KEY,
  event_id INTEGER NOT NULL,
  camera_id INTEGER,
  dataset TEXT NOT NULL,
  reason TEXT NOT NULL CHECK (reason IN ('manual', 'ng', 'low_confidence')),
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
  object_key TEXT,
  error TEXT,
  queued_at REAL NOT NULL,
  done_at REAL,
  UNIQUE (dataset, event_id)
);
CREATE INDEX fleet_uploads_pending ON fleet_uploads (status, id);
CREATE INDEX fleet_uploads_hour ON fleet_uploads (camera_id, reason, queued_at);
CREATE TABLE fleet_dataset_objects (
  dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  object_key TEXT NOT NULL,
  etag TEXT NOT NULL,
  job_id INTEGER,
  PRIMARY KEY (dataset_id, object_key)
)
""",
    )
