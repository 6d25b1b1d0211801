"""One image of a dataset: read it, delete it (its file goes once no dataset uses it)."""

from __future__ import annotations

from appliance import audit
from appliance.caller import CurrentUser
from appliance.catalog.access import image_read, image_row, writable_dataset
from appliance.catalog.files import orphan_files, remove_files
from appliance.catalog.schemas import ImageRead
from appliance.db import Database, write_transaction
from appliance.errors import Forbidden
from appliance.storage import ImageStore


def get_image(db: Database, image_id: int, user: CurrentUser) -> ImageRead:
    return image_read(image_row(db, image_id, user))


def delete_image(db: Database, store: ImageStore, image_id: int, user: CurrentUser) -> None:
    with write_transaction(db):
        row = image_row(db, image_id, user)
        dataset = writable_dataset(db, row["dataset_id"], user)
        file_id, added_by = db.execute(
            "SELECT file_id, added_by FROM images WHERE id = ?", [image_id]
        ).fetchone()
        if not (user.is_admin or dataset["owner_id"] == user.id or added_by == user.id):
            raise Forbidden("only the dataset's owner, an admin or whoever added the image may delete it")
        db.execute("DELETE FROM images WHERE id = ?", [image_id])
        audit.note(dataset_id=row["dataset_id"], name=row["original_name"], sha256=row["sha256"])
        orphans = orphan_files(db, [file_id])
    remove_files(db, store, orphans)
