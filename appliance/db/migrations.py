"""Applying the catalog's migrations: backup first, then every pending one in one write transaction.

The migrations are registered on `appliance.db.registry.migrations` by the schema modules (schema_catalog.py
m001-m005, schema_line.py m006-m009, then one module per later domain), imported below in the order of their
numbers."""

from __future__ import annotations

import datetime
import logging
import sqlite3
from pathlib import Path

from sqlite_utils import Database

# The schema modules register their migrations on import, in the order of their numbers (a test holds them to it).
from appliance.db import schema_catalog, schema_line  # noqa: F401
from appliance.db.connection import write_transaction
from appliance.db.registry import migrations

logger = logging.getLogger(__name__)

# Schema modules of later domains, one statement each in the order of their numbers (apart from the block above,
# so that sorting the imports cannot reorder them).
from appliance.db import schema_evaluation  # noqa: E402, F401 - m030-m034


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
