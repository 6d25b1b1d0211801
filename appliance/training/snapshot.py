"""Dataset snapshot for one training run: a seeded, class-stratified split, symlinked images, YOLO labels."""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from appliance.classes import parse_classes
from appliance.db import Database, write_transaction
from appliance.errors import Invalid
from appliance.imaging.check import FORMATS
from appliance.storage import write_atomic
from appliance.training.contracts import SNAPSHOT_FILE, SnapshotSummary, encode_record, read_record

logger = logging.getLogger(__name__)

LABELED = ("labeled", "reviewed")
BACKGROUND = -1  # stratum of labeled images without boxes (negatives)


def labeled_counts(db: Database, dataset_id: int) -> tuple[int, int]:
    """(labeled images, boxes on labeled images) of a dataset."""
    images = db.execute(
        "SELECT COUNT(*) FROM images WHERE dataset_id = ? AND status IN ('labeled', 'reviewed')", [dataset_id]
    ).fetchone()[0]
    boxes = db.execute(
        """SELECT COUNT(*) FROM annotations a JOIN images i ON i.id = a.image_id
           WHERE a.dataset_id = ? AND i.status IN ('labeled', 'reviewed')""",
        [dataset_id],
    ).fetchone()[0]
    return int(images), int(boxes)


def split_images(
    image_classes: dict[int, set[int]], val_ratio: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic train/val split, stratified by each image's rarest class (background images apart).

    The same ids, classes, ratio and seed always give the same split, whatever order the rows came in.
    """
    class_images: dict[int, int] = defaultdict(int)
    for classes in image_classes.values():
        for class_id in classes:
            class_images[class_id] += 1
    strata: dict[int, list[int]] = defaultdict(list)
    for image_id, classes in image_classes.items():
        key = min(classes, key=lambda c: (class_images[c], c)) if classes else BACKGROUND
        strata[key].append(image_id)
    train: list[int] = []
    val: list[int] = []
    for key in sorted(strata):
        members = sorted(strata[key])
        random.Random(f"{seed}:{key}").shuffle(members)
        n_val = round(len(members) * val_ratio)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    # Tiny datasets: both sides need at least one image.
    if not val and len(train) > 1:
        train.sort()
        val.append(train.pop(random.Random(seed).randrange(len(train))))
    if not train and len(val) > 1:
        val.sort()
        train.append(val.pop(random.Random(seed).randrange(len(val))))
    return sorted(train), sorted(val)


def _label_lines(rows: list[tuple[Any, ...]], width: int, height: int) -> str:
    lines = []
    for class_id, x1, y1, x2, y2 in rows:
        x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
        y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
        if x2 <= x1 or y2 <= y1:
            continue
        lines.append(
            f"{class_id} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n"
        )
    return "".join(lines)


def build_snapshot(
    db: Database,
    data_dir: Path,
    run_dir: Path,
    job_id: int,
    dataset_id: int,
    *,
    val_ratio: float,
    seed: int,
) -> SnapshotSummary:
    """Write images/{train,val} symlinks, labels/{train,val}/*.txt and data.yaml under run_dir.

    Everything is read inside one read transaction, so the snapshot is consistent even while people label.
    The image ids, versions and split go to training_snapshot_images; the summary is returned and saved
    as snapshot.json.
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    conn = db.conn
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")  # one consistent read of images + annotations
    try:
        dataset = conn.execute("SELECT classes FROM datasets WHERE id = ?", [dataset_id]).fetchone()
        if dataset is None:
            raise Invalid(f"dataset {dataset_id} no longer exists")
        class_names = [c.name for c in parse_classes(dataset[0])]
        images = conn.execute(
            """SELECT i.id, i.version, f.sha256, f.format, f.width, f.height
               FROM images i JOIN image_files f ON f.id = i.file_id
               WHERE i.dataset_id = ? AND i.status IN ('labeled', 'reviewed') AND f.checked != 2""",
            [dataset_id],
        ).fetchall()
        boxes: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for image_id, *box in conn.execute(
            """SELECT a.image_id, a.class_id, a.x1, a.y1, a.x2, a.y2 FROM annotations a
               WHERE a.dataset_id = ? ORDER BY a.image_id, a.id""",
            [dataset_id],
        ):
            boxes[image_id].append(tuple(box))
    finally:
        if own_transaction:
            conn.execute("COMMIT")
    read_s = time.perf_counter() - started
    if len(images) < 2:
        raise Invalid(f"dataset {dataset_id} has {len(images)} labeled image(s); training needs at least 2")
    info = {row[0]: row for row in images}
    image_classes = {row[0]: {b[0] for b in boxes.get(row[0], ())} for row in images}
    train, val = split_images(image_classes, val_ratio, seed)

    # A fresh snapshot replaces any partial one left by an interrupted start.
    for folder in ("images", "labels"):
        shutil.rmtree(run_dir / folder, ignore_errors=True)
    store = data_dir / "images"
    ext_of = {fmt: exts[0] for fmt, exts in FORMATS.items()}
    per_class_images: dict[str, dict[int, int]] = {"train": defaultdict(int), "val": defaultdict(int)}
    for split, ids in (("train", train), ("val", val)):
        image_folder = run_dir / "images" / split
        label_folder = run_dir / "labels" / split
        image_folder.mkdir(parents=True)
        label_folder.mkdir(parents=True)
        image_prefix = str(image_folder) + os.sep
        label_prefix = str(label_folder) + os.sep
        counts = per_class_images[split]
        for image_id in ids:
            _, _, sha256, fmt, width, height = info[image_id]
            ext = ext_of[fmt]
            os.symlink(f"{store}/{sha256[:2]}/{sha256}.{ext}", f"{image_prefix}{image_id}.{ext}")
            rows = boxes.get(image_id)
            if rows:
                # os.open/os.write: a third of the system calls of open() (no isatty, no lseek) x 100,000.
                fd = os.open(f"{label_prefix}{image_id}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, _label_lines(rows, width, height).encode())
                finally:
                    os.close(fd)
                for class_id in image_classes[image_id]:
                    counts[class_id] += 1
    files_s = time.perf_counter() - started - read_s

    data_yaml = run_dir / "data.yaml"
    write_atomic(
        data_yaml,
        yaml.safe_dump(
            {
                "path": str(run_dir),
                "train": "images/train",
                "val": "images/val",
                "nc": len(class_names),
                "names": dict(enumerate(class_names)),
            },
            sort_keys=False,
        ).encode(),
    )
    split_of = dict.fromkeys(train, "train") | dict.fromkeys(val, "val")
    with write_transaction(db):
        db.execute("DELETE FROM training_snapshot_images WHERE job_id = ?", [job_id])
        db.conn.executemany(
            "INSERT INTO training_snapshot_images (job_id, image_id, version, split) VALUES (?, ?, ?, ?)",
            [(job_id, image_id, info[image_id][1], split_of[image_id]) for image_id in sorted(split_of)],
        )
    summary = SnapshotSummary(
        job_id=job_id,
        dataset_id=dataset_id,
        run_dir=str(run_dir),
        data_yaml=str(data_yaml),
        classes=class_names,
        val_ratio=val_ratio,
        seed=seed,
        images=len(split_of),
        train_images=len(train),
        val_images=len(val),
        boxes=sum(len(boxes.get(i, ())) for i in split_of),
        background_images=sum(1 for i in split_of if not image_classes[i]),
        class_images={
            split: {class_names[c] if c < len(class_names) else str(c): n for c, n in sorted(counts.items())}
            for split, counts in per_class_images.items()
        },
        # The exact images and annotation versions are rows of training_snapshot_images for this job.
        images_table="training_snapshot_images",
        seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - cpu_started, 3),
    )
    write_atomic(run_dir / SNAPSHOT_FILE, encode_record(summary))
    logger.info(
        "snapshot of dataset %s for job %s: %s train / %s val images in %.2f s (read %.2f s, files %.2f s)",
        dataset_id, job_id, len(train), len(val), summary.seconds, read_s, files_s,
    )  # fmt: skip
    return summary


def load_snapshot(run_dir: Path) -> SnapshotSummary | None:
    """The run's snapshot.json, or None before one was written; MalformedRecord names a file that does not fit."""
    path = run_dir / SNAPSHOT_FILE
    if not path.exists():
        return None
    return read_record(path, SnapshotSummary)
