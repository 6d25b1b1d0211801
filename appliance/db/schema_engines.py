"""Catalog migrations of the inference engines (issue 24, m020-m024): engine pins and OpenVINO exports."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m020_model_engine_pin(db: Database) -> None:
    # The engine an admin pinned for a model (NULL: the box's choice); a camera's own pin is in its settings.
    run_statements(db, "ALTER TABLE models ADD COLUMN engine TEXT")


@migrations()
def m021_openvino_exports(db: Database) -> None:
    # model_exports.format gains 'openvino' (reduced precisions measured by the accuracy gate). SQLite cannot
    # change a CHECK constraint in place: the table is rebuilt with the same rows, ids and index.
    columns = (
        "id, model_id, job_id, format, precision, imgsz, dynamic, status, path, metadata, error, created_at, "
        "finished_at"
    )
    run_statements(
        db,
        f"""
CREATE TABLE model_exports_rebuilt (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
  format TEXT NOT NULL CHECK (format IN ('onnx', 'engine', 'openvino')),
  precision TEXT NOT NULL DEFAULT 'fp32',
  imgsz INTEGER NOT NULL,
  dynamic INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'pending',
  path TEXT,
  metadata TEXT NOT NULL DEFAULT '{{}}',
  error TEXT,
  created_at TEXT NOT NULL,
  finished_at TEXT
);
INSERT INTO model_exports_rebuilt ({columns}) SELECT {columns} FROM model_exports;
DROP TABLE model_exports;
ALTER TABLE model_exports_rebuilt RENAME TO model_exports;
CREATE INDEX model_exports_model ON model_exports(model_id)
""",
    )
