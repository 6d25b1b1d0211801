"""Frozen splits: the images (by content) and boxes (by value) a model is evaluated on.

"Frozen" here means: once a split exists, nothing that happens to its dataset changes it. Two kinds:

- `training`: the val split of a training run, read from the run's own snapshot (runs/<job>/images/val and
  labels/val, written when the training started): exactly the images and labels the training validated on.
  One per run; the evaluation at the end of a training uses it.
- `dataset`: a dataset's labeled and reviewed images and their boxes at the moment someone asks (a "version"
  of the dataset). A split identical in content to one already kept (same fingerprint) is reused, so models
  evaluated on the same dataset while nobody relabeled it share one split and compare image by image.

Images are held by their sha256: the original stays on disk while any dataset holds it. An image deleted
from every dataset since the split was frozen is counted as missing by the evaluation (with the reason),
never silently dropped. Splits no evaluation refers to any more are removed when a new one is frozen.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import msgspec
import yaml

from appliance.caller import CurrentUser
from appliance.catalog import readable_dataset
from appliance.classes import class_names
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, Conflict, Invalid, NotFound
from appliance.evaluation.contracts import Box, SplitItem
from appliance.imaging.check import FORMATS, check_image_bytes

logger = logging.getLogger(__name__)

LABELED = ("labeled", "reviewed")
_FORMAT_OF_EXT = {ext: fmt for fmt, exts in FORMATS.items() for ext in exts}


def fingerprint(classes: list[str], rows: list[tuple[str, list[Box]]]) -> str:
    """sha256 over the class names and each image's content hash and boxes, in order."""
    digest = hashlib.sha256(msgspec.json.encode(classes))
    for sha256, boxes in rows:
        digest.update(sha256.encode())
        digest.update(
            msgspec.json.encode(
                [[c, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)] for c, x1, y1, x2, y2 in boxes]
            )
        )
    return digest.hexdigest()


def split_row(db: Database, split_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM evaluation_splits WHERE id = ?", [split_id]), None)
    if row is None:
        raise NotFound(f"evaluation split {split_id} not found")
    return row


def may_read_split(db: Database, row: dict[str, Any], user: CurrentUser) -> bool:
    """Its dataset's readers (the split shows its images); once the dataset is gone, admins and whoever froze it."""
    if user.is_admin:
        return True
    if row["dataset_id"] is not None:
        try:
            readable_dataset(db, row["dataset_id"], user)
        except NotFound:
            return False
        return True
    return row["created_by"] is not None and row["created_by"] == user.id


def readable_split(db: Database, split_id: int, user: CurrentUser) -> dict[str, Any]:
    row = split_row(db, split_id)
    if not may_read_split(db, row, user):
        raise NotFound(f"evaluation split {split_id} not found")
    return row


def _prune_unused(db: Database) -> None:
    db.execute("DELETE FROM evaluation_splits WHERE id NOT IN (SELECT split_id FROM model_evaluations)")


def _insert_split(
    db: Database,
    *,
    kind: str,
    dataset_id: int | None,
    dataset_name: str,
    job_id: int | None,
    classes: list[str],
    rows: list[tuple[int | None, int, str, str, int, int, list[Box]]],
    user_id: int | None,
) -> int:
    """rows: (image_id, version, sha256, format, width, height, boxes) in position order (inside a transaction)."""
    printed = fingerprint(classes, [(r[2], r[6]) for r in rows])
    same = db.execute(
        "SELECT id FROM evaluation_splits WHERE fingerprint = ? AND kind = ? AND dataset_id IS ? ORDER BY id LIMIT 1",
        [printed, kind, dataset_id],
    ).fetchone()
    if same is not None and kind == "dataset":
        return int(same[0])
    split_id = db.execute(
        """INSERT INTO evaluation_splits (kind, dataset_id, dataset_name, job_id, classes, images, boxes,
                                          fingerprint, created_by, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            kind, dataset_id, dataset_name, job_id, msgspec.json.encode(classes).decode(), len(rows),
            sum(len(r[6]) for r in rows), printed, user_id, now_iso(),
        ],
    ).lastrowid  # fmt: skip
    assert split_id is not None
    db.conn.executemany(
        """INSERT INTO evaluation_split_images (split_id, position, image_id, version, sha256, format, width,
                                                height, boxes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (
                split_id,
                position,
                image_id,
                version,
                sha,
                fmt,
                width,
                height,
                msgspec.json.encode(boxes).decode(),
            )
            for position, (image_id, version, sha, fmt, width, height, boxes) in enumerate(rows)
        ],
    )
    return int(split_id)


def freeze_dataset(db: Database, config: Config, dataset_id: int, user: CurrentUser) -> int:
    """The dataset's labeled and reviewed images with their boxes as they are now: a split (reused if equal)."""
    dataset = readable_dataset(db, dataset_id, user)
    with write_transaction(db):  # one consistent read, and the rows written with it
        images = db.execute(
            """SELECT i.id, i.version, f.sha256, f.format, f.width, f.height
               FROM images i JOIN image_files f ON f.id = i.file_id
               WHERE i.dataset_id = ? AND i.status IN ('labeled', 'reviewed') AND f.checked != 2
               ORDER BY i.id LIMIT ?""",
            [dataset_id, config.evaluation_max_images + 1],
        ).fetchall()
        if not images:
            raise Invalid(f"dataset {dataset_id} has no labeled images to evaluate on")
        if len(images) > config.evaluation_max_images:
            raise Invalid(
                f"dataset {dataset_id} has more than {config.evaluation_max_images} labeled images; an evaluation "
                "takes at most that many (config key evaluation_max_images)"
            )
        boxes: dict[int, list[Box]] = {}
        for image_id, class_id, x1, y1, x2, y2 in db.execute(
            """SELECT a.image_id, a.class_id, a.x1, a.y1, a.x2, a.y2 FROM annotations a
               JOIN images i ON i.id = a.image_id
               WHERE a.dataset_id = ? AND i.status IN ('labeled', 'reviewed') ORDER BY a.image_id, a.id""",
            [dataset_id],
        ):
            boxes.setdefault(image_id, []).append((int(class_id), float(x1), float(y1), float(x2), float(y2)))
        rows = [
            (image_id, version, sha, fmt, width, height, boxes.get(image_id, []))
            for image_id, version, sha, fmt, width, height in images
        ]
        split_id = _insert_split(
            db, kind="dataset", dataset_id=dataset_id, dataset_name=dataset["name"], job_id=None,
            classes=class_names(dataset["classes"]), rows=rows, user_id=user.id,
        )  # fmt: skip
        _prune_unused_except(db, split_id)
    return split_id


def _prune_unused_except(db: Database, keep: int) -> None:
    db.execute(
        "DELETE FROM evaluation_splits WHERE id != ? AND id NOT IN (SELECT split_id FROM model_evaluations)",
        [keep],
    )


MB = 1024 * 1024
MAX_LABEL_BYTES = 4 << 20  # one image's label file in a training snapshot (100,000 boxes is ~4 MB)


def _yolo_boxes(label: Path, width: int, height: int, n_classes: int, job_id: int) -> list[Box]:
    """The boxes of one label file of a run's snapshot. The box wrote it; a line it cannot read means the
    snapshot was damaged, and an evaluation without that box would be wrong without saying so: refused."""
    where = f"training run {job_id}'s snapshot label labels/val/{label.name}"
    with label.open("rb") as handle:
        data = handle.read(MAX_LABEL_BYTES + 1)
    if len(data) > MAX_LABEL_BYTES:
        raise Conflict(f"{where} is over {MAX_LABEL_BYTES >> 20} MB: the snapshot is damaged")
    boxes: list[Box] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError
            class_id, cx, cy, w, h = int(parts[0]), *(float(p) for p in parts[1:])
            if not 0 <= class_id < n_classes or not all(map(math.isfinite, (cx, cy, w, h))):
                raise ValueError
        except ValueError:
            raise Conflict(
                f"{where}, line {number}, is not 'class cx cy w h' with a class of the run's {n_classes}: "
                "the snapshot is damaged, so its evaluation would leave boxes out"
            ) from None
        boxes.append(
            (
                class_id,
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            )
        )
    return boxes


def _size_from_file(config: Config, path: Path, ext: str) -> tuple[int, int, str]:
    """An image of the snapshot the catalog no longer lists (deleted since): its oriented size from its own
    header, so that its labels still count; (0, 0, format) when the file is gone too (then the evaluation
    counts it as missing, with the reason)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(config.max_image_mb * MB + 1)
        checked = check_image_bytes(
            data, max_bytes=config.max_image_mb * MB, max_pixels=config.max_image_pixels
        )
    except (OSError, ValueError, AppError):  # gone, unreadable or refused: counted missing by the evaluation
        return 0, 0, _FORMAT_OF_EXT.get(ext, ext)
    return checked.width, checked.height, checked.format


def training_split(db: Database, config: Config, job_id: int) -> int:
    """The val split of training run `job_id`, read from the run's snapshot folder (once; then kept)."""
    found = db.execute(
        "SELECT id FROM evaluation_splits WHERE kind = 'training' AND job_id = ?", [job_id]
    ).fetchone()
    if found is not None:
        return int(found[0])
    run = config.data_path / "runs" / str(int(job_id))
    data_yaml = run / "data.yaml"
    if not data_yaml.is_file():
        raise Conflict(f"training run {job_id} has no snapshot on disk (runs/{job_id}/data.yaml is gone)")
    names = yaml.safe_load(data_yaml.read_text()).get("names") or {}
    classes = [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    job = db.execute("SELECT dataset_id, created_by FROM jobs WHERE id = ?", [job_id]).fetchone()
    dataset_id, created_by = (job[0], job[1]) if job else (None, None)
    dataset = (
        db.execute("SELECT name FROM datasets WHERE id = ?", [dataset_id]).fetchone() if dataset_id else None
    )
    versions = dict(
        db.execute(
            "SELECT image_id, version FROM training_snapshot_images WHERE job_id = ? AND split = 'val'",
            [job_id],
        ).fetchall()
    )
    links = sorted(
        (run / "images" / "val").iterdir() if (run / "images" / "val").is_dir() else [],
        key=lambda p: (int(p.stem) if p.stem.isdigit() else 0, p.name),
    )
    rows: list[tuple[int | None, int, str, str, int, int, list[Box]]] = []
    for link in links:
        target = Path(os.readlink(link)) if link.is_symlink() else link
        sha, ext = target.stem, target.suffix.lstrip(".").lower()
        size = db.execute("SELECT width, height, format FROM image_files WHERE sha256 = ?", [sha]).fetchone()
        width, height, fmt = (
            (int(size[0]), int(size[1]), str(size[2])) if size else _size_from_file(config, target, ext)
        )
        label = run / "labels" / "val" / f"{link.stem}.txt"
        boxes = _yolo_boxes(label, width, height, len(classes), job_id) if label.is_file() and width else []
        image_id = int(link.stem) if link.stem.isdigit() else None
        rows.append((image_id, int(versions.get(image_id, 0)), sha, fmt, width, height, boxes))
    if not rows:
        raise Conflict(f"training run {job_id} has no val images in its snapshot")
    with write_transaction(db):
        again = db.execute(
            "SELECT id FROM evaluation_splits WHERE kind = 'training' AND job_id = ?", [job_id]
        ).fetchone()
        if again is not None:
            return int(again[0])
        split_id = _insert_split(
            db, kind="training", dataset_id=dataset_id, dataset_name=dataset[0] if dataset else "",
            job_id=job_id, classes=classes, rows=rows, user_id=created_by,
        )  # fmt: skip
    logger.info("training run %s: val split frozen as split %s (%s images)", job_id, split_id, len(rows))
    return split_id


def split_classes(row: dict[str, Any]) -> list[str]:
    return [str(c) for c in msgspec.json.decode(row["classes"])]


def split_items(db: Database, config: Config, split_id: int) -> list[SplitItem]:
    """The split's images as the evaluation reads them: the original's path and the frozen boxes."""
    images = config.data_path / "images"
    items = []
    for position, sha, fmt, boxes in db.execute(
        "SELECT position, sha256, format, boxes FROM evaluation_split_images WHERE split_id = ? ORDER BY position",
        [split_id],
    ):
        ext = FORMATS[fmt][0] if fmt in FORMATS else fmt
        items.append(
            SplitItem(
                position=position,
                path=str(images / sha[:2] / f"{sha}.{ext}"),
                boxes=[tuple(b) for b in msgspec.json.decode(boxes)],
            )
        )
    return items


def training_split_items(db: Database, config: Config, job_id: int) -> tuple[list[str], list[SplitItem]]:
    """(class names, items) of a training run's val split: what the INT8 gate measures an engine on."""
    split_id = training_split(db, config, job_id)
    return split_classes(split_row(db, split_id)), split_items(db, config, split_id)
