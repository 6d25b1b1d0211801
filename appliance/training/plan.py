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

import math
import re
import statistics
from typing import Literal

import msgspec

from appliance.caller import CurrentUser
from appliance.catalog import readable_dataset
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database
from appliance.inference.engines import choose_engine, engines_here
from appliance.system.service import cpu_name, cuda_device_count, read_gpu_snapshot
from appliance.training.schemas import ClassCount, EpochMetrics, TimeEstimate, TrainingPlanRead

LABELED = ("labeled", "reviewed")
# Compute (GFLOPs at 640 px) of YOLOv8 s/m/l/x against n; the YOLO11 family scales about the same.
SCALE_COST = {"n": 1.0, "s": 3.3, "m": 9.1, "l": 19.0, "x": 29.7}
# Seconds per image per epoch at 640 px for a nano model before this box has trained: CPU measured (yolov8n,
# 200 images at 320 px on 2 x86 cores: ~22 s/epoch, so 0.11 s/image, x4 for 640 px); GPU a rough guess for a
# Jetson Orin Nano.
DEFAULT_RATE = {"cpu": 0.44, "gpu": 0.03}
SMALL_SET = 1000  # labeled images under which training from scratch rarely gives a usable model
FEW_BOXES = 20  # boxes of one class under which the model will rarely find it
# A labeled object whose short side is under this many pixels at the training size is (almost) never learned:
# ultralytics' assigner weighs it by its overlap with the untrained predictions, which is ~0 at that size.
MIN_OBJECT_PX = 8
# The size suggested instead keeps the median object at least this big (seen to train at 128 px in the test).
GOOD_OBJECT_PX = 16
ZERO_LOSS = 0.0005  # a box loss under this reads 0.000: the box head received no signal
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


def median_sizes(db: Database, dataset_id: int) -> tuple[float | None, float | None]:
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


def device_names(config: Config, device_kind: str) -> tuple[str, str]:
    """(what trains on, what the model then runs on here), by name: no torch, no CUDA context."""
    if device_kind == "gpu":
        snapshot = read_gpu_snapshot(config) or {}
        names = [str(g.get("name")) for g in snapshot.get("gpus") or [] if g.get("name")]
        trains_on = ", ".join(names) or "the NVIDIA GPU"
    else:
        trains_on = cpu_name()
    choice = choose_engine(
        engines_here(), box=config.inference_engine, openvino_device=config.openvino_device
    )
    return trains_on, choice.describe()


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
    long_side, box_share = median_sizes(db, dataset_id)
    rec_epochs, rec_imgsz, rec_batch, why = recommend(labeled, from_scratch, long_side, box_share)
    gpus = cuda_device_count()
    device_kind: Literal["cpu", "gpu"] = (
        "cpu" if device == "cpu" or (device == "auto" and not gpus) else "gpu"
    )
    warnings = _warnings(labeled, from_scratch, classes, pending, epochs)
    small = small_objects_warning(imgsz or rec_imgsz, box_share)
    if small:
        warnings.append(small)
    time_estimate = estimate(db, device_kind, labeled, epochs or rec_epochs, imgsz or rec_imgsz, base_model)
    trains_on, runs_on = device_names(config, device_kind)
    time_estimate = msgspec.structs.replace(time_estimate, device_name=trains_on, inference=runs_on)
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
        estimate=time_estimate,
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


def size_for_objects(box_share: float) -> int:
    """The smallest multiple of 32 at which the median object is GOOD_OBJECT_PX (at most 2048)."""
    return min(2048, max(32, math.ceil(GOOD_OBJECT_PX / max(box_share, 1e-6) / 32) * 32))


def small_objects_warning(imgsz: int, box_share: float | None) -> str | None:
    """A warning when the median labeled object is under MIN_OBJECT_PX at this training size."""
    if box_share is None or box_share * imgsz >= MIN_OBJECT_PX:
        return None
    return (
        f"At {imgsz} px the median labeled object is about {box_share * imgsz:.1f} px (its boxes are "
        f"{box_share * 100:.0f}% of the image): under {MIN_OBJECT_PX} px the model cannot learn to find it "
        f"(the box loss stays at 0.000 and mAP at 0). Use {size_for_objects(box_share)} px or more"
    )


def run_advice(history: list[EpochMetrics], imgsz: int, box_share: float | None) -> list[str]:
    """What a finished run's losses say about its settings, in words (the training job's result).

    A box loss of 0.000 in every epoch is not a perfect fit: ultralytics' TaskAlignedAssigner weighs each
    box's anchors by score^0.5 x IoU^6 with the current predictions and normalises by the best of them; the
    untrained head predicts boxes of ~7.5 strides per side (60+ px), so a box of a few pixels overlaps them
    by IoU ~0.003, the weight falls to ~1e-10 (under the assigner's eps), and the box and DFL losses, which
    are weighted by it, stay at ~1e-9: the boxes are assigned but count for nothing, and nothing is learned."""
    losses = [h.box_loss for h in history]
    if not losses or any(loss is None or loss >= ZERO_LOSS for loss in losses):
        return []
    size = (
        f"at {imgsz} px the median labeled object is about {box_share * imgsz:.1f} px, too small to carry any "
        f"weight. Train at {size_for_objects(box_share)} px or more"
        if box_share is not None
        else f"at {imgsz} px the labeled objects are too small to carry any weight. Train at a larger image size"
    )
    return [
        f"The box loss was 0.000 in every epoch: the model learned no boxes. The boxes were assigned to anchors, "
        f"but ultralytics weighs each by its overlap with the model's predictions (IoU to the 6th power), and "
        f"{size}."
    ]
