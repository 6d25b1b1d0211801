"""Datasets: list, read, create, change (name, description, classes, sharing) and delete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance import audit
from appliance.caller import CurrentUser, require_writer
from appliance.catalog.access import class_reads, readable_dataset, writable_dataset
from appliance.catalog.files import orphan_files, remove_files
from appliance.catalog.schemas import ClassDef, DatasetCreate, DatasetRead, DatasetUpdate
from appliance.catalog.stats import image_total
from appliance.classes import ClassEntry, default_color, dump_classes, parse_classes
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid
from appliance.storage import ImageStore

# Rows of the trigger-kept count tables go with their dataset (they have no foreign key).
STATS_TABLES = (
    "dataset_class_stats",
    "dataset_size_stats",
    "dataset_status_stats",
    "dataset_class_status_stats",
)


def _normalize_classes(items: Iterable[ClassDef | str]) -> list[ClassEntry]:
    classes: list[ClassEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        definition = ClassDef(name=item) if isinstance(item, str) else item
        name = definition.name.strip()
        if not name:
            raise Invalid(f"class {i} has an empty name")
        if name.lower() in seen:
            raise Invalid(f"class name {name!r} appears twice")
        seen.add(name.lower())
        classes.append(ClassEntry(name=name, color=definition.color or default_color(i)))
    return classes


def _dataset_name(name: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise Invalid("the dataset name is empty")
    return stripped


def _dataset_read(db: Database, row: dict[str, Any]) -> DatasetRead:
    return DatasetRead(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        classes=class_reads(row["classes"]),
        is_public=bool(row["is_public"]),
        owner_id=row["owner_id"],
        owner=row["owner"],
        image_count=image_total(db, row["id"], None, None),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def list_datasets(db: Database, user: CurrentUser) -> list[DatasetRead]:
    rows = db.query(
        """SELECT d.*, u.username AS owner FROM datasets d JOIN users u ON u.id = d.owner_id
           WHERE ? OR d.owner_id = ? OR d.is_public = 1 ORDER BY d.id""",
        [int(user.is_admin), user.id],
    )
    return [_dataset_read(db, row) for row in rows]


def get_dataset(db: Database, dataset_id: int, user: CurrentUser) -> DatasetRead:
    return _dataset_read(db, readable_dataset(db, dataset_id, user))


def create_dataset(db: Database, body: DatasetCreate, user: CurrentUser) -> DatasetRead:
    require_writer(user)
    name = _dataset_name(body.name)
    classes = _normalize_classes(body.classes)
    now = now_iso()
    with write_transaction(db):
        if db.execute("SELECT 1 FROM datasets WHERE owner_id = ? AND name = ?", [user.id, name]).fetchone():
            raise Conflict(f"you already have a dataset named {name!r}")
        cursor = db.execute(
            """INSERT INTO datasets (name, description, owner_id, classes, is_public, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [name, body.description, user.id, dump_classes(classes), int(body.is_public), now, now],
        )
        dataset_id = cursor.lastrowid
    assert dataset_id is not None
    return get_dataset(db, dataset_id, user)


def update_dataset(db: Database, dataset_id: int, body: DatasetUpdate, user: CurrentUser) -> DatasetRead:
    with write_transaction(db):
        row = writable_dataset(db, dataset_id, user, owner_only=True)
        changes: dict[str, str | int] = {}
        name = _dataset_name(body.name) if body.name is not None else row["name"]
        if name != row["name"]:
            clash = db.execute(
                "SELECT 1 FROM datasets WHERE owner_id = ? AND name = ? AND id != ?",
                [row["owner_id"], name, dataset_id],
            ).fetchone()
            if clash:
                raise Conflict(f"the owner already has a dataset named {name!r}")
            changes["name"] = name
        if body.description is not None:
            changes["description"] = body.description
        if body.is_public is not None:
            changes["is_public"] = int(body.is_public)
        if body.classes is not None:
            new_classes = _normalize_classes(body.classes)
            old_count = len(parse_classes(row["classes"]))
            if len(new_classes) < old_count:
                # Class ids are list positions; only trailing classes without boxes may go.
                used = db.execute(
                    "SELECT MIN(class_id) FROM annotations WHERE dataset_id = ? AND class_id >= ?",
                    [dataset_id, len(new_classes)],
                ).fetchone()[0]
                if used is not None:
                    raise Conflict(
                        f"class {used} still has boxes; delete or relabel them before removing the class"
                    )
            changes["classes"] = dump_classes(new_classes)
        if changes:
            changes["updated_at"] = now_iso()
            assignments = ", ".join(f"{column} = ?" for column in changes)
            db.execute(f"UPDATE datasets SET {assignments} WHERE id = ?", [*changes.values(), dataset_id])
    return get_dataset(db, dataset_id, user)


def delete_dataset(db: Database, store: ImageStore, dataset_id: int, user: CurrentUser) -> None:
    """The dataset, its images and boxes; files no other dataset uses are removed after the commit."""
    with write_transaction(db):
        dataset = writable_dataset(db, dataset_id, user, owner_only=True)
        file_ids = [r[0] for r in db.execute("SELECT file_id FROM images WHERE dataset_id = ?", [dataset_id])]
        audit.note(name=dataset["name"], images=len(file_ids))
        db.execute("DELETE FROM datasets WHERE id = ?", [dataset_id])
        for table in STATS_TABLES:
            db.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
        orphans = orphan_files(db, file_ids)
    remove_files(db, store, orphans)
