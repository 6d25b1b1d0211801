"""Before a training starts: what the dataset holds for it (labeled images and boxes per class), settings
recommended for the dataset and the base model, warnings (from scratch on a small set, classes without boxes),
and how long it will take, with how that figure was made.

The time estimate is a rate, seconds per image per epoch at 640 px for a nano model, scaled by the image area
((imgsz / 640)^2) and the model size (the compute of the s/m/l/x variants against n). The rate is measured on
this box: the median over the last completed trainings on the same kind of device (each epoch's seconds over
the images it went through); before any training finished here it is a fixed figure measured once (a 2-core
x86 CPU) or guessed (a Jetson-class GPU), and the answer says which.
"""

from __future__ import annotations

import re
import statistics
from typing import Literal

import msgspec

from appliance.caller import CurrentUser
from appliance.catalog import readable_dataset
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database
from appliance.system.service import cuda_device_count
from appliance.training.schemas import ClassCount, TimeEstimate, TrainingPlanRead

LABELED = ("labeled", "reviewed")
# Compute (GFLOPs at 640 px) of YOLOv8 s/m/l/x against n; the YOLO11 family scales about the same.
SCALE_COST = {"n": 1.0, "s": 3.3, "m": 9.1, "l": 19.0, "x": 29.7}
# Seconds per image per epoch at 640 px for a nano model before this box has trained: CPU measured (yolov8n,
# 200 images at 320 px on 2 x86 cores: ~22 s/epoch, so 0.11 s/image, x4 for 640 px); GPU a rough guess for a
# Jetson Orin Nano.
DEFAULT_RATE = {"cpu": 0.44, "gpu": 0.03}
SMALL_SET = 1000  # labeled images under which training from scratch rarely gives a usable model
FEW_BOXES = 20  # boxes of one class under which the model will rarely find it
SAMPLE = 5000  # rows sampled for image and box sizes


def model_scale(base_model: str) -> str:
    """n/s/m/l/x of yolov8n.yaml, yolo11s.pt, weights:yolo11m.pt ...; 'n' when it cannot be told."""
    match = re.search(r"yolo(?:v8|v5|11|12|26)?([nsmlx])(?:\.yaml|\.pt)?$", base_model.lower())
    return match.group(1) if match else "n"


def _class_counts(db: Database, dataset_id: int, names: list[str]) -> list[ClassCount]:
    counts = {
        class_id: (images, boxes)
        for class_id, images, boxes in db.execute(
            """SELECT a.class_id, COUNT(DISTINCT a.image_id), COUNT(*) FROM annotations a
               JOIN images i ON i.id = a.image_id
               WHERE a.dataset_id = ? AND i.status IN ('labeled', 'reviewed') GROUP BY a.class_id""",
            [dataset_id],
        )
    }
    return [
        ClassCount(class_id=i, name=name, images=counts.get(i, (0, 0))[0], boxes=counts.get(i, (0, 0))[1])
        for i, name in enumerate(names)
    ]


def _sizes(db: Database, dataset_id: int) -> tuple[float | None, float | None]:
    """Median long side of the labeled images, and the median short side of their boxes as a share of it."""
    sides = [
        max(w, h)
        for w, h in db.execute(
            """SELECT f.width, f.height FROM images i JOIN image_files f ON f.id = i.file_id
               WHERE i.dataset_id = ? AND i.status IN ('labeled', 'reviewed') ORDER BY i.id LIMIT ?""",
            [dataset_id, SAMPLE],
        )
    ]
    shares = [
        min(x2 - x1, y2 - y1) / max(w, h)
        for x1, y1, x2, y2, w, h in db.execute(
            """SELECT a.x1, a.y1, a.x2, a.y2, f.width, f.height FROM annotations a
               JOIN images i ON i.id = a.image_id JOIN image_files f ON f.id = i.file_id
               WHERE a.dataset_id = ? AND i.status IN ('labeled', 'reviewed') ORDER BY a.id LIMIT ?""",
            [dataset_id, SAMPLE],
        )
        if max(w, h) > 0
    ]
    return (statistics.median(sides) if sides else None, statistics.median(shares) if shares else None)


def recommend(
    labeled: int, from_scratch: bool, long_side: float | None, box_share: float | None
) -> tuple[int, int, int, list[str]]:
    """(epochs, imgsz, batch, why) for the dataset and the kind of start."""
    why: list[str] = []
    if from_scratch:
        epochs = 300 if labeled < 500 else 150
        why.append(
            f"{epochs} epochs: a model trained from scratch needs many passes (patience stops it earlier)"
        )
    else:
        epochs = 100 if labeled < 500 else 50
        why.append(f"{epochs} epochs: fine-tuning pretrained weights converges sooner")
    imgsz = 640
    if box_share is not None and box_share * 640 < 12:
        # Objects under ~12 px at 640 are hard to find: a larger input keeps them, at more memory and time.
        imgsz = min(960, max(640, int(12 / max(box_share, 1e-6) // 32 * 32)))
        why.append(f"{imgsz} px: the median box is {box_share * 100:.1f}% of the image, small at 640 px")
    elif long_side is not None and long_side < 640:
        imgsz = max(320, int(-(-long_side // 32) * 32))
        why.append(f"{imgsz} px: the images are about {int(long_side)} px, a larger input adds nothing")
    else:
        why.append("640 px: the usual input size, fine for objects that are not tiny")
    batch = 8 if imgsz <= 640 else 4
    why.append(f"batch {batch}: fits an 8 GB Jetson Orin Nano at {imgsz} px")
    return epochs, imgsz, batch, why


def _measured_rate(db: Database, device_kind: str) -> tuple[float | None, int]:
    """Median seconds per image per epoch (640 px, nano) over recent completed trainings on this device kind."""
    rates = []
    for params_text, result_text in db.execute(
        "SELECT params, result FROM jobs WHERE kind = 'train' AND status = 'completed' ORDER BY id DESC LIMIT 10"
    ):
        try:
            params = msgspec.json.decode(params_text)
            result = msgspec.json.decode(result_text)
            device = str(result.get("device") or "")
            if ("cpu" in device.lower()) != (device_kind == "cpu") or not device:
                continue
            snapshot = result.get("snapshot") or {}
            images = int(snapshot.get("train_images", 0)) + int(snapshot.get("val_images", 0))
            epochs = int(result.get("epochs_done") or 0)
            seconds = float(result.get("seconds") or 0)
            work = images * epochs * (int(params.get("imgsz", 640)) / 640) ** 2
            work *= SCALE_COST[model_scale(str(params.get("base_model", "")))]
            if work > 0 and seconds > 0:
                rates.append(seconds / work)
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            continue
    return (statistics.median(rates) if rates else None, len(rates))


def estimate(
    db: Database, device_kind: str, images: int, epochs: int, imgsz: int, base_model: str
) -> TimeEstimate:
    rate, runs = _measured_rate(db, device_kind)
    scale = model_scale(base_model)
    if rate is not None:
        basis = (
            f"measured on this box: the median of {runs} completed training(s) on the {device_kind.upper()}, "
            f"scaled to {images} images, {imgsz} px and a {scale} model"
        )
    else:
        rate = DEFAULT_RATE[device_kind]
        basis = (
            "no training has finished on this box yet: "
            + (
                "a figure measured once on a 2-core CPU"
                if device_kind == "cpu"
                else "a rough guess for a Jetson GPU"
            )
            + f", scaled to {images} images, {imgsz} px and a {scale} model"
        )
    seconds = rate * images * epochs * (imgsz / 640) ** 2 * SCALE_COST[scale]
    return TimeEstimate(
        seconds=round(seconds, 1), per_epoch_s=round(seconds / max(epochs, 1), 2), basis=basis
    )


def training_plan(
    db: Database,
    config: Config,
    user: CurrentUser,
    dataset_id: int,
    base_model: str,
    epochs: int | None = None,
    imgsz: int | None = None,
    device: str = "auto",
) -> TrainingPlanRead:
    dataset = readable_dataset(db, dataset_id, user)
    names = class_names(dataset["classes"])
    by_status: dict[str, int] = dict(
        db.execute(
            "SELECT status, COUNT(*) FROM images WHERE dataset_id = ? GROUP BY status", [dataset_id]
        ).fetchall()
    )
    labeled = sum(by_status.get(s, 0) for s in LABELED)
    classes = _class_counts(db, dataset_id, names)
    boxes = sum(c.boxes for c in classes)
    background = db.execute(
        """SELECT COUNT(*) FROM images WHERE dataset_id = ? AND status IN ('labeled', 'reviewed') AND box_count = 0""",
        [dataset_id],
    ).fetchone()[0]
    pending = db.execute(
        """SELECT COUNT(DISTINCT a.image_id) FROM annotations a JOIN images i ON i.id = a.image_id
           WHERE a.dataset_id = ? AND i.status = 'unlabeled' AND a.source = 'model'""",
        [dataset_id],
    ).fetchone()[0]
    from_scratch = base_model.endswith(".yaml")
    long_side, box_share = _sizes(db, dataset_id)
    rec_epochs, rec_imgsz, rec_batch, why = recommend(labeled, from_scratch, long_side, box_share)
    gpus = cuda_device_count()
    device_kind: Literal["cpu", "gpu"] = (
        "cpu" if device == "cpu" or (device == "auto" and not gpus) else "gpu"
    )
    warnings = _warnings(labeled, from_scratch, classes, pending, epochs)
    return TrainingPlanRead(
        dataset_id=dataset_id,
        base_model=base_model,
        from_scratch=from_scratch,
        labeled_images=labeled,
        unlabeled_images=by_status.get("unlabeled", 0),
        pending_review_images=int(pending),
        background_images=int(background),
        boxes=boxes,
        classes=classes,
        recommended_epochs=rec_epochs,
        recommended_imgsz=rec_imgsz,
        recommended_batch=rec_batch,
        why=why,
        warnings=warnings,
        gpus=gpus,
        device=device_kind,
        estimate=estimate(db, device_kind, labeled, epochs or rec_epochs, imgsz or rec_imgsz, base_model),
    )


def _warnings(
    labeled: int, from_scratch: bool, classes: list[ClassCount], pending: int, epochs: int | None
) -> list[str]:
    warnings: list[str] = []
    if labeled < 2:
        warnings.append(f"{labeled} labeled image(s): training needs at least 2 (label some first)")
    if from_scratch and labeled < SMALL_SET:
        warnings.append(
            f"Training from scratch on {labeled} labeled images rarely gives a usable model: start from base "
            "weights (import yolo11n.pt from a USB drive below) or from a model trained here"
        )
    for c in classes:
        if c.boxes == 0:
            warnings.append(f"class {c.name!r} has no labeled box: the model cannot learn to find it")
        elif c.boxes < FEW_BOXES:
            warnings.append(f"class {c.name!r} has only {c.boxes} labeled boxes: aim for 50 or more")
    if pending:
        warnings.append(f"{pending} image(s) have suggested boxes nobody reviewed yet: they are left out")
    if epochs is not None and epochs < 10:
        warnings.append(
            f"{epochs} epochs is very few: expect a model that finds little or nothing (mAP near 0)"
        )
    return warnings
