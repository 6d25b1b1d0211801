"""Catalog migrations: applied in the order of their names, renamed ones recognised, count tables backfilled."""

from __future__ import annotations

from appliance.db import migrate, open_database
from appliance.db.migrations import RENAMED
from appliance.db.registry import migrations


def test_migrations_apply_in_the_order_of_their_names(tmp_path):
    registered = [m.name for m in migrations._migrations]  # noqa: SLF001
    assert registered == sorted(registered)
    db = open_database(tmp_path / "catalog.db")
    applied = migrate(db, tmp_path / "catalog.db")
    assert applied == sorted(registered)
    rows = [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert rows == sorted(registered)
    assert migrate(db, tmp_path / "catalog.db") == []


def test_a_catalog_with_the_old_migration_names_is_not_migrated_twice(tmp_path):
    """A development catalog recorded m200/m100 before the renumbering: they count as applied."""
    path = tmp_path / "catalog.db"
    db = open_database(path)
    migrate(db, path)
    for old, new in RENAMED.items():
        db.execute("UPDATE _sqlite_migrations SET name = ? WHERE name = ?", [old, new])
    assert migrate(db, path) == []
    names = {r[0] for r in db.execute("SELECT name FROM _sqlite_migrations")}
    assert names >= set(RENAMED.values()) and not names & set(RENAMED)


def test_migration_backfills_counts_of_an_existing_catalog(tmp_path):
    """m003 fills its count tables from rows written before it existed."""
    db = open_database(tmp_path / "old.db")
    names = [m.name for m in migrations._migrations]  # noqa: SLF001
    m003 = migrations._migrations[names.index("m003_status_and_class_counts")]  # noqa: SLF001
    for migration in migrations._migrations[: names.index(m003.name)]:  # noqa: SLF001
        migration.fn(db)
    now = "2026-01-01T00:00:00"
    db.execute(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'a', 'x', 'admin', ?)",
        [now],
    )
    db.execute(
        "INSERT INTO datasets (id, name, owner_id, created_at, updated_at) VALUES (1, 'd', 1, ?, ?)",
        [now, now],
    )
    for n in (1, 2):
        db.execute(
            "INSERT INTO image_files (id, sha256, size, width, height, format, created_at) VALUES (?, ?, 1, 9, 9, 'png', ?)",
            [n, str(n), now],
        )
        db.execute(
            "INSERT INTO images (id, dataset_id, file_id, status, added_at) VALUES (?, 1, ?, ?, ?)",
            [n, n, "labeled" if n == 1 else "unlabeled", now],
        )
    db.execute(
        "INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, created_at) "
        "VALUES (1, 1, 0, 0, 0, 5, 5, 3, ?), (1, 1, 0, 1, 1, 5, 5, 3, ?)",
        [now, now],
    )
    m003.fn(db)
    assert dict(db.execute("SELECT status, images FROM dataset_status_stats")) == {
        "labeled": 1,
        "unlabeled": 1,
    }
    assert db.execute("SELECT class_id, status, images FROM dataset_class_status_stats").fetchall() == [
        (0, "labeled", 1)
    ]
