"""Catalog migrations m001-m005: users, datasets, images, annotations, jobs, models; counts kept by triggers."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements

# Trigger bodies that m009 (schema_line.py) re-creates under a WHEN clause. Applied migrations are history:
# never edit these, add a migration.
BOX_STATS_ON_INSERT = """\
  INSERT INTO dataset_class_stats (dataset_id, class_id, boxes, images)
    VALUES (NEW.dataset_id, NEW.class_id, 0, 0)
    ON CONFLICT (dataset_id, class_id) DO NOTHING;
  UPDATE dataset_class_stats
    SET boxes = boxes + 1,
        images = images + ((SELECT COUNT(*) FROM annotations
                            WHERE image_id = NEW.image_id AND class_id = NEW.class_id) = 1)
    WHERE dataset_id = NEW.dataset_id AND class_id = NEW.class_id;
  INSERT INTO dataset_size_stats (dataset_id, bucket, boxes) VALUES (NEW.dataset_id, NEW.size_bucket, 1)
    ON CONFLICT (dataset_id, bucket) DO UPDATE SET boxes = boxes + 1;
"""
CLASS_STATUS_ON_INSERT = """\
  INSERT INTO dataset_class_status_stats (dataset_id, class_id, status, images)
    SELECT NEW.dataset_id, NEW.class_id, status, 1 FROM images WHERE id = NEW.image_id
    ON CONFLICT (dataset_id, class_id, status) DO UPDATE SET images = images + 1;
"""


@migrations()
def m001_initial_schema(db: Database) -> None:
    run_statements(
        db,
        """
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL UNIQUE COLLATE NOCASE,
  password_hash TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'labeler', 'viewer')),
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  password_changed_at TEXT
);
CREATE TABLE auth_tokens (
  jti TEXT PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  issued_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  revoked_at REAL
);
CREATE INDEX auth_tokens_user ON auth_tokens(user_id);
CREATE TABLE datasets (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  owner_id INTEGER NOT NULL REFERENCES users(id),
  classes TEXT NOT NULL DEFAULT '[]',
  is_public INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  UNIQUE (owner_id, name)
);
CREATE TABLE image_files (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  size INTEGER NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  format TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE images (
  id INTEGER PRIMARY KEY,
  dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  file_id INTEGER NOT NULL REFERENCES image_files(id),
  original_name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'unlabeled' CHECK (status IN ('unlabeled', 'labeled', 'reviewed')),
  version INTEGER NOT NULL DEFAULT 0,
  box_count INTEGER NOT NULL DEFAULT 0,
  added_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  added_at TEXT NOT NULL,
  updated_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  updated_at TEXT,
  UNIQUE (dataset_id, file_id)
);
CREATE INDEX images_dataset_id ON images(dataset_id, id);
CREATE INDEX images_dataset_status ON images(dataset_id, status, id);
CREATE INDEX images_file ON images(file_id);
CREATE TABLE annotations (
  id INTEGER PRIMARY KEY,
  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  dataset_id INTEGER NOT NULL,
  class_id INTEGER NOT NULL CHECK (class_id >= 0),
  x1 REAL NOT NULL,
  y1 REAL NOT NULL,
  x2 REAL NOT NULL,
  y2 REAL NOT NULL,
  size_bucket INTEGER NOT NULL,
  source TEXT NOT NULL DEFAULT 'manual',
  confidence REAL,
  author_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL,
  CHECK (x2 > x1 AND y2 > y1)
);
CREATE INDEX annotations_image ON annotations(image_id, class_id);
CREATE INDEX annotations_dataset_class ON annotations(dataset_id, class_id, image_id);
CREATE TABLE dataset_class_stats (
  dataset_id INTEGER NOT NULL,
  class_id INTEGER NOT NULL,
  boxes INTEGER NOT NULL DEFAULT 0,
  images INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (dataset_id, class_id)
) WITHOUT ROWID;
CREATE TABLE dataset_size_stats (
  dataset_id INTEGER NOT NULL,
  bucket INTEGER NOT NULL,
  boxes INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (dataset_id, bucket)
) WITHOUT ROWID;
CREATE TRIGGER annotations_stats_insert AFTER INSERT ON annotations BEGIN
"""
        + BOX_STATS_ON_INSERT
        + """END;
CREATE TRIGGER annotations_stats_delete AFTER DELETE ON annotations BEGIN
  UPDATE dataset_class_stats
    SET boxes = boxes - 1,
        images = images - ((SELECT COUNT(*) FROM annotations
                            WHERE image_id = OLD.image_id AND class_id = OLD.class_id) = 0)
    WHERE dataset_id = OLD.dataset_id AND class_id = OLD.class_id;
  UPDATE dataset_size_stats SET boxes = boxes - 1
    WHERE dataset_id = OLD.dataset_id AND bucket = OLD.size_bucket;
END;
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
  model_id INTEGER,
  params TEXT NOT NULL DEFAULT '{}',
  progress TEXT NOT NULL DEFAULT '{}',
  result TEXT NOT NULL DEFAULT '{}',
  error TEXT,
  log_tail TEXT,
  created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  heartbeat_at REAL,
  worker_pid INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status ON jobs(status, id);
CREATE INDEX jobs_kind ON jobs(kind, id);
CREATE TABLE job_events (
  id INTEGER PRIMARY KEY,
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  at REAL NOT NULL,
  kind TEXT NOT NULL,
  data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
  job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
  base_model TEXT NOT NULL DEFAULT '',
  classes TEXT NOT NULL DEFAULT '[]',
  imgsz INTEGER NOT NULL DEFAULT 640,
  params TEXT NOT NULL DEFAULT '{}',
  metrics TEXT NOT NULL DEFAULT '{}',
  snapshot TEXT NOT NULL DEFAULT '{}',
  path TEXT NOT NULL DEFAULT '',
  deployed INTEGER NOT NULL DEFAULT 0,
  created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX models_one_deployed ON models(deployed) WHERE deployed = 1;
CREATE TABLE model_exports (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
  format TEXT NOT NULL CHECK (format IN ('onnx', 'engine')),
  precision TEXT NOT NULL DEFAULT 'fp32',
  imgsz INTEGER NOT NULL,
  dynamic INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'pending',
  path TEXT,
  metadata TEXT NOT NULL DEFAULT '{}',
  error TEXT,
  created_at TEXT NOT NULL,
  finished_at TEXT
);
CREATE INDEX model_exports_model ON model_exports(model_id);
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL
)
""",
    )


@migrations()
def m002_training_snapshot_images(db: Database) -> None:
    # The exact images (and their annotation versions) a training job used; one row per image.
    run_statements(
        db,
        """
CREATE TABLE training_snapshot_images (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  image_id INTEGER NOT NULL,
  version INTEGER NOT NULL,
  split TEXT NOT NULL CHECK (split IN ('train', 'val')),
  PRIMARY KEY (job_id, image_id)
) WITHOUT ROWID
""",
    )


@migrations()
def m003_status_and_class_counts(db: Database) -> None:
    """Trigger-kept image counts per status and per (class, status): list totals and stats stay O(1)."""
    run_statements(
        db,
        """
CREATE TABLE dataset_status_stats (
  dataset_id INTEGER NOT NULL,
  status TEXT NOT NULL,
  images INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (dataset_id, status)
) WITHOUT ROWID;
INSERT INTO dataset_status_stats (dataset_id, status, images)
  SELECT dataset_id, status, COUNT(*) FROM images GROUP BY dataset_id, status;
CREATE TABLE dataset_class_status_stats (
  dataset_id INTEGER NOT NULL,
  class_id INTEGER NOT NULL,
  status TEXT NOT NULL,
  images INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (dataset_id, class_id, status)
) WITHOUT ROWID;
INSERT INTO dataset_class_status_stats (dataset_id, class_id, status, images)
  SELECT a.dataset_id, a.class_id, i.status, COUNT(DISTINCT a.image_id)
  FROM annotations a JOIN images i ON i.id = a.image_id GROUP BY a.dataset_id, a.class_id, i.status;
CREATE TRIGGER images_status_stats_insert AFTER INSERT ON images BEGIN
  INSERT INTO dataset_status_stats (dataset_id, status, images) VALUES (NEW.dataset_id, NEW.status, 1)
    ON CONFLICT (dataset_id, status) DO UPDATE SET images = images + 1;
END;
CREATE TRIGGER images_status_stats_delete AFTER DELETE ON images BEGIN
  UPDATE dataset_status_stats SET images = images - 1
    WHERE dataset_id = OLD.dataset_id AND status = OLD.status;
END;
CREATE TRIGGER images_status_stats_update AFTER UPDATE OF status, dataset_id ON images
  WHEN OLD.status IS NOT NEW.status OR OLD.dataset_id IS NOT NEW.dataset_id BEGIN
  UPDATE dataset_status_stats SET images = images - 1
    WHERE dataset_id = OLD.dataset_id AND status = OLD.status;
  INSERT INTO dataset_status_stats (dataset_id, status, images) VALUES (NEW.dataset_id, NEW.status, 1)
    ON CONFLICT (dataset_id, status) DO UPDATE SET images = images + 1;
  UPDATE dataset_class_status_stats SET images = images - 1
    WHERE dataset_id = OLD.dataset_id AND status = OLD.status
      AND class_id IN (SELECT class_id FROM annotations WHERE image_id = OLD.id);
  INSERT INTO dataset_class_status_stats (dataset_id, class_id, status, images)
    SELECT DISTINCT NEW.dataset_id, class_id, NEW.status, 1 FROM annotations WHERE image_id = NEW.id
    ON CONFLICT (dataset_id, class_id, status) DO UPDATE SET images = images + 1;
END;
-- An image's boxes go before the image itself, so the box triggers still see the image's status.
CREATE TRIGGER images_delete_boxes_first BEFORE DELETE ON images BEGIN
  DELETE FROM annotations WHERE image_id = OLD.id;
END;
CREATE TRIGGER annotations_class_status_insert AFTER INSERT ON annotations
  WHEN (SELECT COUNT(*) FROM annotations WHERE image_id = NEW.image_id AND class_id = NEW.class_id) = 1 BEGIN
"""
        + CLASS_STATUS_ON_INSERT
        + """END;
CREATE TRIGGER annotations_class_status_delete AFTER DELETE ON annotations
  WHEN (SELECT COUNT(*) FROM annotations WHERE image_id = OLD.image_id AND class_id = OLD.class_id) = 0 BEGIN
  UPDATE dataset_class_status_stats SET images = images - 1
    WHERE dataset_id = OLD.dataset_id AND class_id = OLD.class_id
      AND status = (SELECT status FROM images WHERE id = OLD.image_id);
END
""",
    )


@migrations()
def m004_login_trusted(db: Database) -> None:
    # Clients (username|address) that logged in successfully, until when they are spared the account lock.
    run_statements(
        db,
        """
CREATE TABLE login_trusted (
  pair TEXT PRIMARY KEY,
  until REAL NOT NULL
) WITHOUT ROWID
""",
    )


@migrations()
def m005_image_files_checked(db: Database) -> None:
    # Imports store files after the header checks only; a background pass decodes each one, makes its
    # thumbnail and marks it: 0 pending, 1 decoded (thumbnail made), 2 corrupt (left out of training).
    run_statements(
        db,
        """
ALTER TABLE image_files ADD COLUMN checked INTEGER NOT NULL DEFAULT 1;
CREATE INDEX image_files_unchecked ON image_files(id) WHERE checked != 1
""",
    )
