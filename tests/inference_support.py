"""Helpers for the inference and export tests: model rows, exported files, an oracle model with live outputs."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.clock import now_iso
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database, write_transaction
from tests.models import CLASSES, enliven_detection_head, synthetic_image

CLASS_ROWS = [
    {"name": name, "color": color} for name, color in zip(CLASSES, ["#e62828", "#1e78e6"], strict=True)
]
_SCRATCH = Path(tempfile.mkdtemp(prefix="inference-tests-"))
atexit.register(shutil.rmtree, _SCRATCH, True)


def insert_model(
    db: Database,
    config: Config,
    weights: Path,
    *,
    name: str = "tiny",
    imgsz: int = 64,
    dataset_id: int | None = None,
    job_id: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> int:
    """A models row the way training creates it, with best.pt copied to models/<id>/best.pt."""
    with write_transaction(db):
        cursor = db.execute(
            """INSERT INTO models (name, dataset_id, job_id, base_model, classes, imgsz, metrics, path, created_at)
               VALUES (?, ?, ?, 'yolov8n.yaml', ?, ?, ?, '', ?)""",
            [name, dataset_id, job_id, json.dumps(CLASS_ROWS), imgsz, json.dumps(metrics or {}), now_iso()],
        )
        model_id = int(cursor.lastrowid or 0)
        target = config.data_path / "models" / str(model_id) / "best.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, target)
        db.execute("UPDATE models SET path = ? WHERE id = ?", [str(target), model_id])
    return model_id


def shapes_image(seed: int, width: int = 200, height: int = 150) -> np.ndarray:
    """A synthetic shapes image resized to a non-square size, so letterbox padding is exercised."""
    image, _ = synthetic_image(seed, 96)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


@functools.cache
def oracle_weights(tiny_weights: str) -> Path:
    """The tiny model with live outputs: trained 2 epochs at 64 px its activations fade to nearly constant
    scores (ties make any NMS comparison meaningless). Batch-norm is re-estimated on synthetic images with
    unit scale and the head's last layers re-drawn, so boxes and scores vary per image; still a real
    ultralytics checkpoint exported by the real exporter."""
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(_SCRATCH / "ultralytics")
    from ultralytics import YOLO

    model = YOLO(tiny_weights)
    net = model.model.float()
    enliven_detection_head(net, class_bias=-3.0)
    out = _SCRATCH / "oracle" / "best.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out


@functools.cache
def oracle_onnx(tiny_weights: str, imgsz: int) -> Path:
    """The oracle model exported to ONNX at imgsz by our exporter (same code as the export job's child)."""
    from appliance.inference.onnx_export import export_onnx

    out = _SCRATCH / "oracle" / f"model_{imgsz}.onnx"
    export_onnx(oracle_weights(tiny_weights), out, imgsz, False, _SCRATCH / "ultralytics")
    return out


@functools.cache
def exported_data_dir(tiny_weights: str) -> Path:
    """A data folder whose model 1 (the oracle model) was exported to ONNX at 320 by a real export job."""
    from appliance.jobs.service import claim_next_job
    from appliance.jobs.worker import run_one
    from appliance.models import jobs  # noqa: F401 - registers the export job kind
    from appliance.models.exports import create_export
    from appliance.models.schemas import ExportCreate

    root = _SCRATCH / "exported" / "data"
    config = load_config(env={}, data_dir=str(root))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    model_id = insert_model(db, config, oracle_weights(tiny_weights), name="oracle", imgsz=320)
    user = system_user(db)
    create_export(db, config, model_id, ExportCreate(format="onnx", imgsz=320), user)
    job = claim_next_job(db, ["export"])
    assert job is not None
    state = run_one(job, db, config)
    assert state == "completed", db.execute(
        "SELECT error, log_tail FROM jobs WHERE id = ?", [job["id"]]
    ).fetchone()
    db.conn.close()
    return root


def system_user(db: Database) -> Any:
    """An admin row and its CurrentUser, for calling services directly."""
    row = db.execute("SELECT id FROM users WHERE username = 'svc-admin'").fetchone()
    if row is None:
        with write_transaction(db):
            cursor = db.execute(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES ('svc-admin', 'x', 'admin', ?)",
                [now_iso()],
            )
            user_id = int(cursor.lastrowid or 0)
    else:
        user_id = int(row[0])
    return current_user(user_id)


def current_user(user_id: int) -> Any:
    from appliance.caller import CurrentUser

    return CurrentUser(id=user_id, username="svc-admin", role="admin", token_id="test")


def copy_exported_model(source_root: Path, config: Config, db: Database, model_id: int = 1) -> int:
    """Copy the exported model's row and files into another data folder (same id)."""
    src = open_database(source_root / "appliance.db")
    row = next(src.query("SELECT * FROM models WHERE id = ?", [model_id]))
    exports = list(src.query("SELECT * FROM model_exports WHERE model_id = ?", [model_id]))
    src.conn.close()
    with write_transaction(db):
        row = {**row, "job_id": None, "created_by": None, "dataset_id": None}
        db["models"].insert(row)
        for export in exports:
            db["model_exports"].insert({**export, "job_id": None})
    shutil.copytree(source_root / "models" / str(model_id), config.data_path / "models" / str(model_id))
    return model_id


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes; two degenerate boxes (clipped to an edge) match when their corners agree."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:  # both boxes degenerate (clipped to an edge): equal when their corners agree
        return 1.0 if max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.05 else 0.0
    return inter / union


def add_training_run(
    db: Database,
    config: Config,
    onnx: Path,
    *,
    images: int = 20,
    val_ratio: float = 0.4,
    model_id: int | None = None,
) -> int:
    """A training run as the box makes one, without the training: a dataset of shapes images labelled with the
    FP32 model's own boxes (the oracle model has not learned the shapes, so FP32 scores well on its own
    validation split and whatever a reduced precision changes shows as a drop), a completed "train" job, and
    its snapshot written by the real snapshot code (runs/<job>/images/{train,val}, labels). Linked to
    `model_id` when given. Returns the job id."""
    from appliance.catalog.boxes import put_annotations
    from appliance.catalog.datasets import create_dataset
    from appliance.catalog.schemas import AnnotationsPut, Box, DatasetCreate
    from appliance.catalog.uploads import IncomingFile, add_images
    from appliance.inference.pipeline import load_detector
    from appliance.jobs.service import create_job
    from appliance.storage import ImageStore
    from appliance.training.snapshot import build_snapshot

    user = system_user(db)
    dataset = create_dataset(db, DatasetCreate(name=f"shapes-{now_iso()}", classes=CLASSES), user)
    files = [IncomingFile(name=f"{seed}.jpg", data=jpeg(shapes_image(seed))) for seed in range(images)]
    added = add_images(db, ImageStore(config), config, dataset.id, user, files).added
    fp32 = load_detector(onnx, backend="openvino", class_names=list(CLASSES), imgsz=320)
    for image in added:
        stored = cv2.imread(str(ImageStore(config).image_path(image.sha256, "jpg")))
        found = fp32.detect(stored, conf=0.05, iou=0.7).detections
        boxes = [Box(class_id=d.class_id, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2) for d in found]
        put_annotations(
            db, image.id, AnnotationsPut(version=image.version, boxes=boxes, status="labeled"), user
        )
    job_id = create_job(db, "train", {}, user_id=user.id, dataset_id=dataset.id)
    run_dir = config.data_path / "runs" / str(job_id)
    build_snapshot(db, config.data_path, run_dir, job_id, dataset.id, val_ratio=val_ratio, seed=0)
    with write_transaction(db):
        db.execute("UPDATE jobs SET status = 'completed' WHERE id = ?", [job_id])
        if model_id is not None:
            db.execute("UPDATE models SET job_id = ? WHERE id = ?", [job_id, model_id])
    return job_id
