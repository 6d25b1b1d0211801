"""Catalog migrations m030-m034: model evaluations on frozen splits, and shadow mode of a candidate model."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m030_model_evaluations(db: Database) -> None:
    # A frozen split: the images (by content) and their boxes (by value) a model is measured on, so a result
    # can be reproduced and two models compared on the very same labels whatever happens to the dataset
    # afterwards. Evaluations keep their summary and one row per image (its kept predictions and errors).
    run_statements(
        db,
        """
CREATE TABLE evaluation_splits (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('training', 'dataset')),
  dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
  dataset_name TEXT NOT NULL DEFAULT '',
  job_id INTEGER,
  classes TEXT NOT NULL DEFAULT '[]',
  images INTEGER NOT NULL,
  boxes INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX evaluation_splits_dataset ON evaluation_splits (dataset_id, id);
CREATE INDEX evaluation_splits_fingerprint ON evaluation_splits (fingerprint);
CREATE UNIQUE INDEX evaluation_splits_training ON evaluation_splits (job_id) WHERE kind = 'training';
CREATE TABLE evaluation_split_images (
  split_id INTEGER NOT NULL REFERENCES evaluation_splits(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  image_id INTEGER,
  version INTEGER NOT NULL DEFAULT 0,
  sha256 TEXT NOT NULL,
  format TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  boxes TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (split_id, position)
) WITHOUT ROWID;
CREATE TABLE model_evaluations (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  split_id INTEGER NOT NULL REFERENCES evaluation_splits(id),
  job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
  source TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  error TEXT,
  summary TEXT NOT NULL DEFAULT '{}',
  created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL,
  finished_at TEXT
);
CREATE INDEX model_evaluations_model ON model_evaluations (model_id, id);
CREATE INDEX model_evaluations_split ON model_evaluations (split_id, model_id);
CREATE TABLE model_evaluation_images (
  evaluation_id INTEGER NOT NULL REFERENCES model_evaluations(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  missing TEXT,
  false_positives INTEGER NOT NULL DEFAULT 0,
  misses INTEGER NOT NULL DEFAULT 0,
  wrong_class INTEGER NOT NULL DEFAULT 0,
  predictions TEXT NOT NULL DEFAULT '[]',
  errors TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (evaluation_id, position)
) WITHOUT ROWID
""",
    )


@migrations()
def m031_shadow_mode(db: Database) -> None:
    # Shadow mode: a candidate model run beside a camera's model on the same frames (one per camera), the
    # inspections where the two disagreed (their own kind of event, with both results and the frame), and
    # promotions (the candidate becoming the camera's model) with what they replaced, so each can be undone.
    run_statements(
        db,
        """
CREATE TABLE camera_shadows (
  camera_id INTEGER PRIMARY KEY REFERENCES cameras(id) ON DELETE CASCADE,
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  window_size INTEGER NOT NULL,
  started_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  started_at TEXT NOT NULL
);
CREATE TABLE shadow_events (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL,
  ts REAL NOT NULL,
  mode TEXT NOT NULL,
  trigger_id INTEGER,
  deployed_model_id INTEGER,
  candidate_model_id INTEGER,
  deployed TEXT NOT NULL DEFAULT '{}',
  candidate TEXT NOT NULL DEFAULT '{}',
  difference TEXT NOT NULL DEFAULT '{}',
  width INTEGER NOT NULL DEFAULT 0,
  height INTEGER NOT NULL DEFAULT 0,
  snapshot TEXT,
  snapshot_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX shadow_events_camera ON shadow_events (camera_id, id);
CREATE TABLE shadow_promotions (
  id INTEGER PRIMARY KEY,
  camera_id INTEGER NOT NULL REFERENCES cameras(id) ON DELETE CASCADE,
  from_model_id INTEGER,
  to_model_id INTEGER NOT NULL,
  window_size INTEGER NOT NULL,
  shadowed INTEGER NOT NULL,
  agreed INTEGER NOT NULL,
  promoted_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  promoted_at TEXT NOT NULL,
  undone_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  undone_at TEXT
);
CREATE INDEX shadow_promotions_camera ON shadow_promotions (camera_id, id)
""",
    )
