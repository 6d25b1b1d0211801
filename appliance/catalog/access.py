"""Who may read and write which dataset and image: the row lookups every catalog operation starts with."""

from __future__ import annotations

from typing import Any

from appliance.caller import CurrentUser, require_writer
from appliance.catalog.schemas import ClassRead, ImageRead
from appliance.classes import parse_classes
from appliance.db import Database
from appliance.errors import Forbidden, NotFound

IMAGE_COLUMNS = """i.id, i.dataset_id, f.sha256, f.width, f.height, f.size, f.format, i.original_name,
                   i.status, i.version, i.box_count, i.added_at, f.checked"""


def _first_row(db: Database, sql: str, args: list[Any], missing: str) -> dict[str, Any]:
    row = next(db.query(sql, args), None)
    if row is None:
        raise NotFound(missing)
    return row


def dataset_row(db: Database, dataset_id: int) -> dict[str, Any]:
    """The dataset's row with its owner's name, whoever asks (NotFound when it does not exist)."""
    return _first_row(
        db,
        "SELECT d.*, u.username AS owner FROM datasets d JOIN users u ON u.id = d.owner_id WHERE d.id = ?",
        [dataset_id],
        f"dataset {dataset_id} not found",
    )


def readable_dataset(db: Database, dataset_id: int, user: CurrentUser) -> dict[str, Any]:
    """The dataset if the caller may see it; a private dataset of someone else is simply not found."""
    row = dataset_row(db, dataset_id)
    if not (user.is_admin or row["owner_id"] == user.id or row["is_public"]):
        raise NotFound(f"dataset {dataset_id} not found")
    return row


def writable_dataset(
    db: Database, dataset_id: int, user: CurrentUser, *, owner_only: bool = False
) -> dict[str, Any]:
    """Labelers write into their own and public datasets; settings and deletion are the owner's (or an admin's)."""
    row = readable_dataset(db, dataset_id, user)
    require_writer(user)
    is_owner = user.is_admin or row["owner_id"] == user.id
    if owner_only and not is_owner:
        raise Forbidden("only the dataset's owner or an admin may change or delete it")
    if not is_owner and not row["is_public"]:
        raise Forbidden("only the dataset's owner or an admin may change it")
    return row


def class_reads(raw: str) -> list[ClassRead]:
    """A dataset row's stored class list as the API shows it (the id is the list position)."""
    return [ClassRead(id=i, name=c.name, color=c.color) for i, c in enumerate(parse_classes(raw))]


def image_read(row: dict[str, Any] | tuple[Any, ...]) -> ImageRead:
    """An ImageRead from a row of IMAGE_COLUMNS (as a mapping or in column order)."""
    if isinstance(row, tuple):
        return ImageRead(*row)
    return ImageRead(**{k: row[k] for k in ImageRead.__struct_fields__})


def image_row(db: Database, image_id: int, user: CurrentUser) -> dict[str, Any]:
    """The image's row (IMAGE_COLUMNS) if the caller may see its dataset; otherwise it is not found."""
    row = _first_row(
        db,
        f"SELECT {IMAGE_COLUMNS} FROM images i JOIN image_files f ON f.id = i.file_id WHERE i.id = ?",
        [image_id],
        f"image {image_id} not found",
    )
    try:
        readable_dataset(db, row["dataset_id"], user)
    except NotFound:
        raise NotFound(f"image {image_id} not found") from None
    return row
