"""A batch of uploaded images into a dataset: each checked and stored once by content, duplicates reported."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.caller import CurrentUser
from appliance.catalog import files
from appliance.catalog.access import IMAGE_COLUMNS, dataset_row, image_read, writable_dataset
from appliance.catalog.schemas import ImageRead, UploadDuplicate, UploadRejected, UploadResult
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, Invalid
from appliance.storage import ImageStore, check_free_space


@dataclass
class IncomingFile:
    name: str
    data: bytes
    error: AppError | None = None  # refused before its bytes were read in full (too large)


def add_images(
    db: Database,
    store: ImageStore,
    config: Config,
    dataset_id: int,
    user: CurrentUser,
    incoming: list[IncomingFile],
) -> UploadResult:
    """Store many uploads; duplicates by content are reported, bad files rejected with a reason.

    One bad file does not fail a batch (it is listed under `rejected`); when no file of the request
    is usable, the request fails with the first file's status (415 type, 413 size, 422 corrupt).
    """
    writable_dataset(db, dataset_id, user)
    if not incoming:
        raise Invalid("no files in the upload: send one or more images as multipart form fields")
    check_free_space(config.data_path, config.disk_min_free_mb, sum(len(f.data) for f in incoming))
    prepared: list[tuple[IncomingFile, files.StoredImage]] = []
    rejected: list[UploadRejected] = []
    first_error: AppError | None = None
    for upload in incoming:
        try:
            if upload.error is not None:
                raise upload.error
            # Looked up on the module at call time: tests replace it to race a concurrent delete.
            prepared.append((upload, files.store_image_file(store, config, upload.data)))
        except AppError as exc:
            first_error = first_error or exc
            rejected.append(UploadRejected(name=upload.name, status_code=exc.status_code, reason=exc.detail))
    if first_error is not None and not prepared:
        raise type(first_error)(f"{rejected[0].name}: {first_error.detail}")
    added_ids: list[int] = []
    duplicates: list[UploadDuplicate] = []
    now = now_iso()
    with write_transaction(db):
        dataset_row(db, dataset_id)  # still there?
        file_ids = files.upsert_image_files(db, [stored for _, stored in prepared], now)
        for upload, stored in prepared:
            if not store.image_path(stored.sha256, files.file_ext(stored.format)).exists():
                files.store_image_file(store, config, upload.data)  # a concurrent delete removed it meanwhile
            file_id = file_ids[stored.sha256]
            existing = db.execute(
                "SELECT id FROM images WHERE dataset_id = ? AND file_id = ?", [dataset_id, file_id]
            ).fetchone()
            if existing:
                duplicates.append(
                    UploadDuplicate(
                        name=upload.name, image_id=existing[0], reason="same image already in the dataset"
                    )
                )
                continue
            cursor = db.execute(
                "INSERT INTO images (dataset_id, file_id, original_name, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                [dataset_id, file_id, upload.name[:255], user.id, now],
            )
            assert cursor.lastrowid is not None
            added_ids.append(cursor.lastrowid)
        db.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [now, dataset_id])
    return UploadResult(added=images_by_ids(db, added_ids), duplicates=duplicates, rejected=rejected)


def images_by_ids(db: Database, ids: list[int]) -> list[ImageRead]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {IMAGE_COLUMNS} FROM images i JOIN image_files f ON f.id = i.file_id WHERE i.id IN ({marks}) "
        "ORDER BY i.id",
        ids,
    ).fetchall()
    return [image_read(tuple(r)) for r in rows]
