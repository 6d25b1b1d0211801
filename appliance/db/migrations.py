"""Applying the catalog's migrations: backup first, then every pending one in one write transaction.

The migrations are registered on `appliance.db.registry.migrations` by the schema modules listed in
SCHEMA_MODULES, imported in that order: the order of their numbers (a test holds them to it)."""

from __future__ import annotations

import datetime
import importlib
import logging
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from appliance.db.connection import write_transaction
from appliance.db.registry import migrations

logger = logging.getLogger(__name__)

# The schema modules, in the order of their migrations' numbers; a later domain appends its module here.
SCHEMA_MODULES = [
    "schema_catalog",  # m001-m005: users, datasets, images, annotations, jobs, models
    "schema_line",  # m006-m009: stations and events, model visibility, line outputs, bulk box stats
    "schema_line_security",  # m010: the client certificates each OPC UA output trusts
    "schema_engines",  # m020-m021: model engine pins, OpenVINO exports
    "schema_genicam",  # m025-m029: machine-vision cameras (the camera's feature values kept with each event)
    "schema_evaluation",  # m030-m031: model evaluations, shadow mode
    "schema_traceability",  # m035-m036: camera settings revisions on events, the hash-chained audit log
    "schema_fleet",  # m040-m042: trusted keys, bundle identities, rollouts on this box, hard cases
    "schema_disk_full",  # m050-m054: the line on a full disk (why an event has no snapshot)
    "schema_events",  # m055-m056: event counts per minute and hour, the event list's indexes, rule rows
    "schema_source_digest",  # m057: a salted digest of each camera revision's source (a password change)
    "schema_camera_ids",  # m058: a deleted camera's id is never given to a new one
]
for _module in SCHEMA_MODULES:
    importlib.import_module(f"appliance.db.{_module}")


def backup_database(db: Database, db_path: Path) -> Path:
    """Online copy of the catalog (sqlite backup API) before migrations change it."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    target = db_path.with_name(f"{db_path.name}.bak-{stamp}")
    dest = sqlite3.connect(str(target))
    try:
        db.conn.backup(dest)
    finally:
        dest.close()
    return target


# Names of migrations before they were numbered in the order they are applied (a catalog made by a
# development build still carries them; the migrations themselves are the same).
RENAMED = {
    "m200_training_snapshot_images": "m002_training_snapshot_images",
    "m100_status_and_class_counts": "m003_status_and_class_counts",
}


def _rename_applied(db: Database) -> None:
    if not db["_sqlite_migrations"].exists():
        return
    for old, new in RENAMED.items():
        db.execute(
            "UPDATE _sqlite_migrations SET name = ? WHERE migration_set = ? AND name = ?",
            [new, migrations.name, old],
        )


def migrate(db: Database, db_path: Path | None = None) -> list[str]:
    """Apply pending migrations; back the file up first when it already holds a schema."""
    with write_transaction(db):
        _rename_applied(db)
    pending = [m.name for m in migrations.pending(db)]
    if not pending:
        return []
    has_schema = bool(migrations.applied(db))
    if has_schema and db_path is not None and db_path.exists():
        backup = backup_database(db, db_path)
        logger.info("backed up catalog to %s before migrations %s", backup, pending)

    # BEGIN IMMEDIATE: the web and the worker may start together; one applies, the other finds nothing pending.
    with write_transaction(db):
        pending = [m.name for m in migrations.pending(db)]
        migrations.apply(db)
    return pending
