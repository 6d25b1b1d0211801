"""Models, exports, deploy and inference on uploads: logic and SQL (no torch, no ultralytics here)."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from appliance.caller import CurrentUser, require_writer
from appliance.classes import class_names, parse_classes
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, open_database, write_transaction
from appliance.errors import AppError, Conflict, Invalid, NotFound
from appliance.imaging.check import check_image_bytes, decode_image
from appliance.inference.artifacts import (
    artifact_name,
    artifact_path,
    model_dir,
    read_model_metadata,
    weights_path,
)
from appliance.inference.backends import tensorrt_available
from appliance.inference.cache import ModelCache
from appliance.inference.pipeline import Detections, Detector, load_detector
from appliance.inference.schemas import (
    Box,
    ClassInfo,
    DetectionRead,
    ExportCreate,
    ExportRead,
    InferenceRead,
    ModelRead,
    SuggestionsRead,
)
from appliance.inference.tensorrt_backend import EngineBuiltElsewhere

logger = logging.getLogger(__name__)

TENSORRT_MISSING = "TensorRT is not available on this machine"
ENGINE_PREFERENCE = ("fp16", "int8", "fp32")


# --- rows -------------------------------------------------------------------------------------


def _loads(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default if value is None else value


def model_row(db: Database, model_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)
    if row is None:
        raise NotFound(f"model {model_id} not found")
    return row


def _visible(db: Database, row: dict[str, Any], user: CurrentUser) -> bool:
    if user.is_admin or row.get("dataset_id") is None:
        return True
    found = db.execute(
        "SELECT owner_id, is_public FROM datasets WHERE id = ?", [row["dataset_id"]]
    ).fetchone()
    return found is None or found[0] == user.id or bool(found[1])


def visible_deployed_model(db: Database, user: CurrentUser, when_none: str) -> dict[str, Any]:
    """The deployed model, if the caller may see its dataset (a private dataset's model predicts for no one else)."""
    row = deployed_model(db)
    if row is None:
        raise Conflict(when_none)
    if not _visible(db, row, user):
        raise NotFound(f"model {row['id']} not found")
    return row


def readable_model(db: Database, model_id: int, user: CurrentUser) -> dict[str, Any]:
    """The model if the caller may see its dataset; otherwise simply not found."""
    row = model_row(db, model_id)
    if not _visible(db, row, user):
        raise NotFound(f"model {model_id} not found")
    return row


def deployed_model(db: Database) -> dict[str, Any] | None:
    return next(db.query("SELECT * FROM models WHERE deployed = 1"), None)


def _export_read(row: dict[str, Any], progress: dict[str, Any] | None = None) -> ExportRead:
    return ExportRead(
        id=row["id"],
        model_id=row["model_id"],
        job_id=row["job_id"],
        format=row["format"],
        precision=row["precision"],
        imgsz=row["imgsz"],
        dynamic=bool(row["dynamic"]),
        status=row["status"],
        file=row["path"],
        metadata=_loads(row["metadata"], {}),
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        progress=progress or {},
    )


def _exports(db: Database, model_id: int) -> list[ExportRead]:
    rows = db.execute(
        """SELECT e.id, e.model_id, e.job_id, e.format, e.precision, e.imgsz, e.dynamic, e.status, e.path,
                  e.metadata, e.error, e.created_at, e.finished_at, j.progress, j.status
           FROM model_exports e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.model_id = ? ORDER BY e.id""",
        [model_id],
    ).fetchall()
    names = ["id", "model_id", "job_id", "format", "precision", "imgsz", "dynamic", "status", "path"]
    names += ["metadata", "error", "created_at", "finished_at"]
    result = []
    for r in rows:
        row = dict(zip(names, r[:13], strict=True))
        # A job cancelled or failed before the handler ran leaves the export row behind: show the job's state.
        if row["status"] in ("pending", "running") and r[14] in ("failed", "cancelled"):
            row["status"] = r[14]
        result.append(_export_read(row, _loads(r[13], {})))
    return result


def _model_read(db: Database, config: Config, row: dict[str, Any]) -> ModelRead:
    dataset_name = None
    if row.get("dataset_id") is not None:
        found = db.execute("SELECT name FROM datasets WHERE id = ?", [row["dataset_id"]]).fetchone()
        dataset_name = found[0] if found else None
    exports = _exports(db, row["id"])
    classes = parse_classes(row["classes"])
    return ModelRead(
        id=row["id"],
        name=row["name"],
        dataset_id=row["dataset_id"],
        dataset_name=dataset_name,
        job_id=row["job_id"],
        base_model=row["base_model"],
        classes=[ClassInfo(name=c.name, color=c.color) for c in classes],
        imgsz=row["imgsz"],
        params=_loads(row["params"], {}),
        metrics=_loads(row["metrics"], {}),
        deployed=bool(row["deployed"]),
        created_at=row["created_at"],
        exports=exports,
        has_weights=weights_path(config, row["id"]).is_file(),
        ready=bool(loadable_artifacts(config, row["id"])),
    )


def list_models(db: Database, config: Config, user: CurrentUser) -> list[ModelRead]:
    rows = [r for r in db.query("SELECT * FROM models ORDER BY id DESC") if _visible(db, r, user)]
    return [_model_read(db, config, r) for r in rows]


def get_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    return _model_read(db, config, readable_model(db, model_id, user))


def list_exports(db: Database, model_id: int, user: CurrentUser) -> list[ExportRead]:
    readable_model(db, model_id, user)
    return _exports(db, model_id)


# --- exports ----------------------------------------------------------------------------------


def export_precision(body: ExportCreate) -> str:
    if body.format == "onnx":
        if body.half or body.int8:
            raise Invalid("half and int8 apply to TensorRT engines; an ONNX export is fp32")
        return "fp32"
    return "int8" if body.int8 else "fp16" if body.half else "fp32"


def _queue_export(db: Database, model_id: int, params: dict[str, Any], user_id: int | None) -> int:
    """The model_exports row and its job, in one transaction; refused while the same export is queued."""
    from appliance.jobs.service import create_job

    with write_transaction(db):
        busy = db.execute(
            """SELECT e.id FROM model_exports e JOIN jobs j ON j.id = e.job_id
               WHERE e.model_id = ? AND e.format = ? AND e.precision = ? AND e.imgsz = ? AND e.dynamic = ?
                 AND j.status IN ('pending', 'running')""",
            [model_id, params["format"], params["precision"], params["imgsz"], int(params["dynamic"])],
        ).fetchone()
        if busy:
            raise Conflict(f"the same export of model {model_id} is already queued (export {busy[0]})")
        cursor = db.execute(
            """INSERT INTO model_exports (model_id, format, precision, imgsz, dynamic, status, created_at)
               VALUES (?, ?, ?, ?, ?, 'pending', ?)""",
            [
                model_id,
                params["format"],
                params["precision"],
                params["imgsz"],
                int(params["dynamic"]),
                now_iso(),
            ],
        )
        export_id = int(cursor.lastrowid or 0)
        job_id = create_job(
            db, "export", {**params, "export_id": export_id}, user_id=user_id, model_id=model_id
        )
        db.execute("UPDATE model_exports SET job_id = ? WHERE id = ?", [job_id, export_id])
    return export_id


def queue_engine_rebuild(config: Config, model: dict[str, Any], artifact: dict[str, Any]) -> int | None:
    """Queue an export that builds `artifact` again on this machine (its GPU or TensorRT version changed).

    Returns the new export id, or None when the same rebuild is already queued or has already failed here
    since that engine was built: a failed rebuild rewrites the ONNX file, which makes the camera reload the
    model and land here again, so retrying would loop; an admin exports the engine by hand instead.
    """
    params = {
        "model_id": model["id"],
        "format": "engine",
        "precision": artifact["precision"],
        "imgsz": int(artifact["imgsz"]),
        "dynamic": bool(artifact.get("dynamic")),
        "calib_images": int(artifact.get("calibration_images") or 200),
        "rebuild": True,
    }
    # The engine file's own mtime (this box's clock), not its recorded build time (another machine's).
    try:
        mtime = Path(artifact["path"]).stat().st_mtime
    except OSError:
        mtime = 0.0
    written = datetime.datetime.fromtimestamp(mtime, datetime.UTC)
    db = open_database(config.db_path)
    try:
        failed = db.execute(
            """SELECT e.id FROM model_exports e JOIN jobs j ON j.id = e.job_id
               WHERE e.model_id = ? AND e.format = 'engine' AND e.precision = ? AND e.imgsz = ?
                 AND e.dynamic = ? AND 'failed' IN (e.status, j.status)
                 AND json_extract(j.params, '$.rebuild') AND e.created_at >= ?""",
            [
                model["id"],
                params["precision"],
                params["imgsz"],
                int(params["dynamic"]),
                written.isoformat(timespec="milliseconds"),
            ],
        ).fetchone()
        if failed:
            logger.warning(
                "rebuild of engine %s of model %s failed before (export %s); not queued again",
                artifact.get("file"),
                model["id"],
                failed[0],
            )
            return None
        return _queue_export(db, int(model["id"]), params, None)
    except Conflict:
        return None
    finally:
        db.conn.close()


def create_export(
    db: Database, config: Config, model_id: int, body: ExportCreate, user: CurrentUser
) -> ExportRead:
    """Validate, then create the model_exports row and its job in one transaction; the worker does the rest."""
    row = readable_model(db, model_id, user)
    require_writer(user)
    precision = export_precision(body)
    imgsz = body.imgsz or int(row["imgsz"] or 640)
    if not 32 <= imgsz <= 2048 or imgsz % 32:
        raise Invalid(f"imgsz must be a multiple of 32 between 32 and 2048, got {imgsz}")
    if body.int8 and not 1 <= body.calib_images <= 5000:
        raise Invalid(f"calib_images must be between 1 and 5000, got {body.calib_images}")
    if body.format == "engine" and not tensorrt_available():
        raise Invalid(f"{TENSORRT_MISSING}: a TensorRT engine can only be built on the device (Jetson)")
    if not weights_path(config, model_id).is_file():
        raise Conflict(f"model {model_id} has no weights file on disk; it cannot be exported")
    params = {
        "model_id": model_id,
        "format": body.format,
        "precision": precision,
        "imgsz": imgsz,
        "dynamic": body.dynamic,
        "calib_images": body.calib_images,
    }
    export_id = _queue_export(db, model_id, params, user.id)
    return next(e for e in _exports(db, model_id) if e.id == export_id)


def cancel_export(db: Database, model_id: int, export_id: int, user: CurrentUser) -> ExportRead:
    """Cancel a queued or running export (a running one stops at its next check and its child is killed)."""
    from appliance.jobs.service import request_cancel

    readable_model(db, model_id, user)
    require_writer(user)
    found = db.execute(
        "SELECT job_id FROM model_exports WHERE id = ? AND model_id = ?", [export_id, model_id]
    ).fetchone()
    if found is None:
        raise NotFound(f"export {export_id} of model {model_id} not found")
    if found[0] is None:
        raise Conflict(f"export {export_id} has no job to cancel")
    job = request_cancel(db, int(found[0]), "export")
    if job["status"] == "cancelled":
        with write_transaction(db):
            db.execute(
                "UPDATE model_exports SET status = 'cancelled', finished_at = ? WHERE id = ?",
                [now_iso(), export_id],
            )
    return next(e for e in _exports(db, model_id) if e.id == export_id)


# --- deploy -----------------------------------------------------------------------------------


def deploy_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    """Mark the model deployed and every other one not, atomically (the unique index allows one)."""
    readable_model(db, model_id, user)
    require_writer(user)
    if not loadable_artifacts(config, model_id):
        raise Conflict(f"model {model_id} has no completed export; export it to ONNX or TensorRT first")
    with write_transaction(db):
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1 AND id != ?", [model_id])
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    return get_model(db, config, model_id, user)


# --- loading ----------------------------------------------------------------------------------


def loadable_artifacts(config: Config, model_id: int) -> list[dict[str, Any]]:
    """Completed exports listed in metadata.json whose file exists; names re-derived from their fields."""
    metadata = read_model_metadata(config, model_id)
    found = []
    for name, entry in metadata.get("artifacts", {}).items():
        try:
            expected = artifact_name(
                entry["format"], entry["precision"], int(entry["imgsz"]), bool(entry.get("dynamic"))
            )
        except (KeyError, ValueError, TypeError):
            continue
        if expected != name:  # never open a name that is not one we produce
            continue
        path = model_dir(config, model_id) / name
        if path.is_file():
            found.append({**entry, "file": name, "path": path})
    return found


def select_artifact(
    config: Config, row: dict[str, Any], precision: str | None = None, *, with_tensorrt: bool | None = None
) -> dict[str, Any]:
    """The export to run: the requested precision where it exists, else the best one this machine can run.

    Engines come first where TensorRT is present (fp16, int8, fp32), then ONNX; the model's training
    size first, then the newest build.
    """
    trt = tensorrt_available() if with_tensorrt is None else with_tensorrt
    candidates = [a for a in loadable_artifacts(config, row["id"]) if a["format"] == "onnx" or trt]
    if not candidates:
        raise Conflict(f"model {row['id']} has not been exported; export it to ONNX (or TensorRT) first")

    def rank(a: dict[str, Any]) -> tuple[Any, ...]:
        exact = precision is not None and a["precision"] == precision and (a["format"] == "engine") == trt
        fmt = 0 if a["format"] == "engine" else 1
        pref = ENGINE_PREFERENCE.index(a["precision"]) if a["precision"] in ENGINE_PREFERENCE else 9
        return (not exact, fmt, pref, a["imgsz"] != row.get("imgsz"), -(a.get("built_at_unix") or 0))

    chosen = sorted(candidates, key=rank)[0]
    if precision is not None and chosen["precision"] != precision:
        logger.warning(
            "model %s has no %s export here; using %s (%s)",
            row["id"],
            precision,
            chosen["file"],
            chosen["precision"],
        )
    return chosen


def load_detector_for_model(
    config: Config,
    db_or_row: Any,
    row: dict[str, Any] | None = None,
    *,
    precision: str | None = None,
) -> Detector:
    """A Detector for a models row (a catalog connection may be passed first; it is not needed)."""
    model = row if row is not None else db_or_row
    if not isinstance(model, dict):
        raise TypeError("load_detector_for_model needs a models row")
    chosen = select_artifact(config, model, precision)
    names = class_names(model.get("classes"))
    try:
        return load_detector(chosen["path"], class_names=names or None, imgsz=int(chosen["imgsz"]))
    except AppError as exc:
        if chosen["format"] != "engine":
            raise
        # An engine that cannot load must not stop inference: run the ONNX file meanwhile. One built on
        # another GPU or TensorRT version is rebuilt here by the worker.
        logger.exception("engine %s of model %s cannot be loaded; using ONNX", chosen["file"], model["id"])
        if isinstance(exc, EngineBuiltElsewhere):
            try:  # a busy catalog must not cost the ONNX fallback; the next load tries again
                export_id = queue_engine_rebuild(config, model, chosen)
                logger.info(
                    "rebuild of engine %s of model %s queued as export %s",
                    chosen["file"],
                    model["id"],
                    export_id,
                )
            except Exception:
                logger.exception("queueing the rebuild of engine %s failed", chosen["file"])
        onnx = select_artifact(config, model, "fp32", with_tensorrt=False)
        return load_detector(onnx["path"], class_names=names or None, imgsz=int(onnx["imgsz"]))


_caches: dict[int, ModelCache] = {}
_caches_lock = threading.Lock()


def detector_cache(config: Config) -> ModelCache:
    """The process-wide cache of loaded detectors (sized by config.model_cache_size)."""
    with _caches_lock:
        cache = _caches.get(config.model_cache_size)
        if cache is None:
            cache = _caches[config.model_cache_size] = ModelCache(config.model_cache_size)
        return cache


def cached_detector(
    config: Config, row: dict[str, Any], precision: str | None = None
) -> tuple[Detector, str]:
    chosen = select_artifact(config, row, precision)
    path: Path = chosen["path"]
    version = (chosen["file"], path.stat().st_mtime_ns)
    detector = detector_cache(config).get(
        row["id"],
        chosen["precision"],
        lambda: load_detector_for_model(config, row, precision=precision),
        version,
    )
    # An engine that could not load was replaced by the fp32 ONNX model: say what actually runs.
    return detector, chosen["precision"] if detector.key == "tensorrt" else "fp32"


# --- inference --------------------------------------------------------------------------------


def _detections_read(result: Detections) -> list[DetectionRead]:
    return [
        DetectionRead(
            class_id=d.class_id,
            class_name=d.class_name,
            confidence=round(d.confidence, 6),
            box=Box(x1=round(d.x1, 2), y1=round(d.y1, 2), x2=round(d.x2, 2), y2=round(d.y2, 2)),
        )
        for d in result.detections
    ]


def _check_thresholds(confidence: float, iou: float, max_det: int) -> None:
    if not 0.0 <= confidence <= 1.0:
        raise Invalid(f"confidence must be between 0 and 1, got {confidence}")
    if not 0.0 <= iou <= 1.0:
        raise Invalid(f"iou must be between 0 and 1, got {iou}")
    if not 1 <= max_det <= 3000:
        raise Invalid(f"max_det must be between 1 and 3000, got {max_det}")


def run_inference(
    db: Database,
    config: Config,
    user: CurrentUser,
    data: bytes,
    *,
    model_id: int | None = None,
    confidence: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    precision: str | None = None,
) -> InferenceRead:
    _check_thresholds(confidence, iou, max_det)
    if model_id is None:
        row = visible_deployed_model(db, user, "no model is deployed; deploy one or pass model_id")
    else:
        row = readable_model(db, model_id, user)
    if not data:
        raise Invalid("the image file is empty")
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    started = time.perf_counter()
    image = decode_image(data, checked)
    decode_ms = (time.perf_counter() - started) * 1000
    detector, chosen_precision = cached_detector(config, row, precision)
    result = detector.detect(image, conf=confidence, iou=iou, max_det=max_det)
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    timings["decode_ms"] = round(decode_ms, 3)
    timings["total_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return InferenceRead(
        model_id=row["id"],
        backend=detector.key,
        precision=chosen_precision,
        width=result.width,
        height=result.height,
        detections=_detections_read(result),
        timings=timings,
    )


def suggest_boxes(
    db: Database,
    config: Config,
    user: CurrentUser,
    image_path: Path,
    image_id: int,
    dataset_classes: list[str],
    *,
    confidence: float = 0.25,
    iou: float = 0.45,
) -> SuggestionsRead:
    """Run the deployed model on a stored image; class ids are mapped to the dataset's classes by name."""
    _check_thresholds(confidence, iou, 300)
    row = visible_deployed_model(db, user, "no model is deployed; deploy a model to get suggestions")
    data = image_path.read_bytes()
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    detector, _ = cached_detector(config, row)
    result = detector.detect(decode_image(data, checked), conf=confidence, iou=iou)
    index = {name: i for i, name in enumerate(dataset_classes)}
    kept, skipped = [], set()
    for d in result.detections:
        if d.class_name in index:
            d.class_id = index[d.class_name]
            kept.append(d)
        else:
            skipped.add(d.class_name)
    result.detections = kept
    return SuggestionsRead(
        image_id=image_id,
        model_id=row["id"],
        detections=_detections_read(result),
        skipped_classes=sorted(skipped),
    )


__all__ = [
    "artifact_path",
    "cached_detector",
    "create_export",
    "deploy_model",
    "deployed_model",
    "load_detector_for_model",
    "run_inference",
]
