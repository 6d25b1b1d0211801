"""An image's boxes: read them, replace them all under a version check, and the inserts imports share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from appliance.caller import CurrentUser
from appliance.catalog.access import image_row, writable_dataset
from appliance.catalog.schemas import AnnotationsPut, AnnotationsRead, BoxRead
from appliance.catalog.stats import size_bucket
from appliance.classes import parse_classes
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid


class BoxLike(Protocol):
    """What a stored box needs: a request's Box, an import's or the camera's pre-label alike."""

    @property
    def class_id(self) -> int: ...
    @property
    def x1(self) -> float: ...
    @property
    def y1(self) -> float: ...
    @property
    def x2(self) -> float: ...
    @property
    def y2(self) -> float: ...
    @property
    def source(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...


def get_annotations(db: Database, image_id: int, user: CurrentUser) -> AnnotationsRead:
    row = image_row(db, image_id, user)
    meta = db.execute("SELECT updated_at, updated_by FROM images WHERE id = ?", [image_id]).fetchone()
    boxes = [
        BoxRead(*r)
        for r in db.execute(
            "SELECT id, class_id, x1, y1, x2, y2, source, confidence, author_id FROM annotations "
            "WHERE image_id = ? ORDER BY id",
            [image_id],
        )
    ]
    return AnnotationsRead(
        image_id=image_id,
        version=row["version"],
        status=row["status"],
        width=row["width"],
        height=row["height"],
        boxes=boxes,
        updated_at=meta[0],
        updated_by=meta[1],
    )


def validate_boxes(boxes: Iterable[BoxLike], width: int, height: int, class_count: int) -> None:
    for n, box in enumerate(boxes):
        if box.class_id >= class_count:
            raise Invalid(
                f"box {n}: class {box.class_id} does not exist (the dataset has {class_count} classes)"
            )
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            raise Invalid(f"box {n}: x2 and y2 must be greater than x1 and y1")
        if box.x2 > width or box.y2 > height:
            raise Invalid(
                f"box {n}: ({box.x1}, {box.y1}, {box.x2}, {box.y2}) is outside the {width}x{height} image"
            )
        if not all(math.isfinite(v) for v in (box.x1, box.y1, box.x2, box.y2)):
            raise Invalid(f"box {n}: coordinates must be finite numbers")


def put_annotations(db: Database, image_id: int, body: AnnotationsPut, user: CurrentUser) -> AnnotationsRead:
    """Replace all boxes of one image in one transaction; a stale version is a 409, never a silent overwrite."""
    with write_transaction(db):
        row = image_row(db, image_id, user)
        dataset = writable_dataset(db, row["dataset_id"], user)
        if body.version != row["version"]:
            raise Conflict(
                f"image {image_id} was changed by someone else (your version {body.version}, "
                f"current {row['version']}); reload it to see their boxes"
            )
        validate_boxes(body.boxes, row["width"], row["height"], len(parse_classes(dataset["classes"])))
        replace_boxes(db, image_id, row["dataset_id"], body.boxes, user.id)
        status = body.status or "labeled"
        db.execute(
            """UPDATE images SET version = version + 1, status = ?, box_count = ?, updated_by = ?, updated_at = ?
               WHERE id = ?""",
            [status, len(body.boxes), user.id, now_iso(), image_id],
        )
    return get_annotations(db, image_id, user)


def replace_boxes(
    db: Database, image_id: int, dataset_id: int, boxes: Iterable[BoxLike], author_id: int | None
) -> None:
    """Delete and insert an image's boxes (inside the caller's transaction); triggers keep the stats."""
    db.execute("DELETE FROM annotations WHERE image_id = ?", [image_id])
    insert_boxes(db, dataset_id, [(image_id, box) for box in boxes], author_id)


def insert_boxes(
    db: Database, dataset_id: int, boxes: Iterable[tuple[int, BoxLike]], author_id: int | None
) -> None:
    """Insert (image id, box) pairs of one dataset in one statement (inside the caller's transaction)."""
    now = now_iso()
    db.conn.executemany(
        """INSERT INTO annotations
           (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, source, confidence, author_id, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (
                image_id, dataset_id, b.class_id, b.x1, b.y1, b.x2, b.y2, size_bucket(b.x2 - b.x1, b.y2 - b.y1),
                b.source, b.confidence, author_id, now,
            )
            for image_id, b in boxes
        ],
    )  # fmt: skip


def insert_new_boxes(
    db: Database,
    dataset_id: int,
    boxes: Sequence[tuple[int, BoxLike]],
    statuses: dict[int, str],
    author_id: int | None,
) -> None:
    """Insert the boxes of images that had none (an import's batch), keeping the stats in a few statements.

    Inside the caller's write transaction: the per-box triggers stand aside (stats_deferred, m009) and the
    batch's totals per class, per (class, status) and per size bucket are applied at once. `statuses` gives
    each image's status. Only for images without boxes before: "images per class" counts them all as new.
    """
    if not boxes:
        return
    db.execute("INSERT INTO stats_deferred (token) VALUES (1)")
    try:
        insert_boxes(db, dataset_id, boxes, author_id)
    finally:
        db.execute("DELETE FROM stats_deferred")
    per_class: dict[int, list[int]] = {}  # class -> [boxes, images]
    seen: set[tuple[int, int]] = set()
    per_class_status: dict[tuple[int, str], int] = {}
    per_bucket: dict[int, int] = {}
    for image_id, box in boxes:
        counts = per_class.setdefault(box.class_id, [0, 0])
        counts[0] += 1
        if (image_id, box.class_id) not in seen:
            seen.add((image_id, box.class_id))
            counts[1] += 1
            key = (box.class_id, statuses[image_id])
            per_class_status[key] = per_class_status.get(key, 0) + 1
        bucket = size_bucket(box.x2 - box.x1, box.y2 - box.y1)
        per_bucket[bucket] = per_bucket.get(bucket, 0) + 1
    conn = db.conn
    conn.executemany(
        """INSERT INTO dataset_class_stats (dataset_id, class_id, boxes, images) VALUES (?, ?, ?, ?)
           ON CONFLICT (dataset_id, class_id) DO UPDATE
           SET boxes = boxes + excluded.boxes, images = images + excluded.images""",
        [(dataset_id, class_id, n[0], n[1]) for class_id, n in per_class.items()],
    )
    conn.executemany(
        """INSERT INTO dataset_class_status_stats (dataset_id, class_id, status, images) VALUES (?, ?, ?, ?)
           ON CONFLICT (dataset_id, class_id, status) DO UPDATE SET images = images + excluded.images""",
        [(dataset_id, class_id, status, n) for (class_id, status), n in per_class_status.items()],
    )
    conn.executemany(
        """INSERT INTO dataset_size_stats (dataset_id, bucket, boxes) VALUES (?, ?, ?)
           ON CONFLICT (dataset_id, bucket) DO UPDATE SET boxes = boxes + excluded.boxes""",
        [(dataset_id, bucket, n) for bucket, n in per_bucket.items()],
    )
