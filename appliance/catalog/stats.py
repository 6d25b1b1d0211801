"""Dataset counts: images per status and class, boxes per class and size bucket, from trigger-kept tables."""

from __future__ import annotations

import math
from typing import Any

from appliance.caller import CurrentUser
from appliance.catalog.access import class_reads, readable_dataset
from appliance.catalog.schemas import ClassStats, DatasetStats, SizeBucket
from appliance.db import Database

MIN_BUCKET, MAX_BUCKET = 3, 11  # box size buckets: <16 px, 16-32, ... 1024-2048, >=2048 (sqrt of area)


def size_bucket(width: float, height: float) -> int:
    """The size bucket of a box (log2 of the square root of its area, clamped), stored with every box."""
    side = math.sqrt(max(width * height, 1e-9))
    return min(MAX_BUCKET, max(MIN_BUCKET, int(math.floor(math.log2(side))) if side >= 1 else MIN_BUCKET))


def image_total(db: Database, dataset_id: int, status: str | None, class_id: int | None) -> int:
    """How many images of the dataset have this status and/or a box of this class (from the count tables)."""
    if class_id is None:
        sql = "SELECT COALESCE(SUM(images), 0) FROM dataset_status_stats WHERE dataset_id = ?"
        args: list[Any] = [dataset_id]
    else:
        sql = "SELECT COALESCE(SUM(images), 0) FROM dataset_class_status_stats WHERE dataset_id = ? AND class_id = ?"
        args = [dataset_id, class_id]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    return int(db.execute(sql, args).fetchone()[0])


def dataset_stats(db: Database, dataset_id: int, user: CurrentUser) -> DatasetStats:
    """Counts come from trigger-maintained tables and index counts, so they stay fast at 100,000 images."""
    row = readable_dataset(db, dataset_id, user)
    classes = class_reads(row["classes"])
    by_status = {"unlabeled": 0, "labeled": 0, "reviewed": 0}
    for status, count in db.execute(
        "SELECT status, images FROM dataset_status_stats WHERE dataset_id = ?", [dataset_id]
    ):
        by_status[status] = count
    per_class = {
        class_id: (boxes, images)
        for class_id, boxes, images in db.execute(
            "SELECT class_id, boxes, images FROM dataset_class_stats WHERE dataset_id = ?", [dataset_id]
        )
    }
    class_stats = [
        ClassStats(
            class_id=c.id,
            name=c.name,
            boxes=per_class.get(c.id, (0, 0))[0],
            images=per_class.get(c.id, (0, 0))[1],
        )
        for c in classes
    ]
    sizes = dict(
        db.execute(
            "SELECT bucket, boxes FROM dataset_size_stats WHERE dataset_id = ?", [dataset_id]
        ).fetchall()
    )
    buckets = [
        SizeBucket(
            min_px=0 if b == MIN_BUCKET else 2**b,
            max_px=None if b == MAX_BUCKET else 2 ** (b + 1),
            boxes=sizes.get(b, 0),
        )
        for b in range(MIN_BUCKET, MAX_BUCKET + 1)
    ]
    return DatasetStats(
        dataset_id=dataset_id,
        images=sum(by_status.values()),
        by_status=by_status,
        boxes=sum(s.boxes for s in class_stats),
        classes=class_stats,
        box_sizes=buckets,
    )
