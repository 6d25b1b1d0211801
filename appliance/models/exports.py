"""Export requests: precision rules, one model_exports row and its job per request, cancel, engine rebuilds."""

from __future__ import annotations

import datetime
import logging

from appliance.caller import CurrentUser, require_writer
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, open_database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound
from appliance.inference.backends import tensorrt_available
from appliance.inference.openvino_backend import openvino_available
from appliance.jobs.service import create_job, request_cancel
from appliance.models.artifacts import Artifact, weights_path
from appliance.models.contracts import ExportParams, Precision
from appliance.models.registry import ModelRow, export_read, readable_model
from appliance.models.schemas import ExportCreate, ExportRead

logger = logging.getLogger(__name__)

KIND = "export"
TENSORRT_MISSING = "TensorRT is not available on this machine"


def export_precision(body: ExportCreate) -> Precision:
    """The precision an export request asks for (`precision`, or the older half / int8 flags), checked
    against what its format can make."""
    flagged: Precision | None = "int8" if body.int8 else "fp16" if body.half else None
    if body.precision is not None and flagged is not None and body.precision != flagged:
        raise Invalid(f"precision {body.precision} contradicts {'int8' if body.int8 else 'half'}: give one")
    precision: Precision = body.precision or flagged or "fp32"
    if body.format == "onnx" and precision != "fp32":
        raise Invalid(
            "half, int8 and other precisions apply to TensorRT engines and OpenVINO; an ONNX export is fp32"
        )
    if body.format == "engine" and precision == "bf16":
        raise Invalid("TensorRT engines are fp32, fp16 or int8")
    if body.format == "openvino" and precision == "fp32":
        raise Invalid(
            "OpenVINO runs the FP32 ONNX file as it is: export ONNX; openvino exports are int8, bf16 or fp16"
        )
    return precision


def _queue_export(db: Database, params: ExportParams, user_id: int | None) -> int:
    """The model_exports row and its job, in one transaction; refused while the same export is queued."""
    model_id = params.model_id
    same = [model_id, params.format, params.precision, params.imgsz, int(params.dynamic)]
    with write_transaction(db):
        busy = db.execute(
            """SELECT e.id FROM model_exports e JOIN jobs j ON j.id = e.job_id
               WHERE e.model_id = ? AND e.format = ? AND e.precision = ? AND e.imgsz = ? AND e.dynamic = ?
                 AND j.status IN ('pending', 'running')""",
            same,
        ).fetchone()
        if busy:
            raise Conflict(f"the same export of model {model_id} is already queued (export {busy[0]})")
        cursor = db.execute(
            """INSERT INTO model_exports (model_id, format, precision, imgsz, dynamic, status, created_at)
               VALUES (?, ?, ?, ?, ?, 'pending', ?)""",
            [*same, now_iso()],
        )
        export_id = int(cursor.lastrowid or 0)
        params.export_id = export_id
        job_id = create_job(db, KIND, params, user_id=user_id, model_id=model_id)
        db.execute("UPDATE model_exports SET job_id = ? WHERE id = ?", [job_id, export_id])
    return export_id


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
    if precision == "int8" and not 1 <= body.calib_images <= config.calibration_images_max:
        raise Invalid(
            f"calib_images must be between 1 and {config.calibration_images_max}, got {body.calib_images}"
        )
    if body.format == "engine" and not tensorrt_available():
        raise Invalid(f"{TENSORRT_MISSING}: a TensorRT engine can only be built on the device (Jetson)")
    if body.format == "openvino" and not openvino_available():
        raise Invalid("OpenVINO is not installed on this box")
    if not weights_path(config, model_id).is_file():
        raise Conflict(f"model {model_id} has no weights file on disk; it cannot be exported")
    params = ExportParams(
        model_id=model_id,
        format=body.format,
        precision=precision,
        imgsz=imgsz,
        dynamic=body.dynamic,
        calib_images=body.calib_images,
    )
    export_id = _queue_export(db, params, user.id)
    return export_read(db, model_id, export_id)


def cancel_export(db: Database, model_id: int, export_id: int, user: CurrentUser) -> ExportRead:
    """Cancel a queued or running export (a running one stops at its next check and its child is killed)."""
    readable_model(db, model_id, user)
    require_writer(user)
    found = db.execute(
        "SELECT job_id FROM model_exports WHERE id = ? AND model_id = ?", [export_id, model_id]
    ).fetchone()
    if found is None:
        raise NotFound(f"export {export_id} of model {model_id} not found")
    if found[0] is None:
        raise Conflict(f"export {export_id} has no job to cancel")
    job = request_cancel(db, int(found[0]), KIND)
    if job["status"] == "cancelled":
        with write_transaction(db):
            db.execute(
                "UPDATE model_exports SET status = 'cancelled', finished_at = ? WHERE id = ?",
                [now_iso(), export_id],
            )
    return export_read(db, model_id, export_id)


def queue_engine_build(db: Database, model_id: int, imgsz: int, precision: Precision = "fp16") -> int | None:
    """An engine export the box queues for itself (a fleet rollout, before it switches models); None when the
    same export is already queued."""
    params = ExportParams(model_id=model_id, format="engine", precision=precision, imgsz=imgsz)
    try:
        return _queue_export(db, params, None)
    except Conflict:
        return None


def queue_engine_rebuild(config: Config, model: ModelRow, artifact: Artifact) -> int | None:
    """Queue an export that builds `artifact` again on this machine (its GPU or TensorRT version changed).

    Returns the new export id, or None when the same rebuild is already queued or has already failed here
    since that engine was built: a failed rebuild rewrites the ONNX file, which makes the camera reload the
    model and land here again, so retrying would loop; an admin exports the engine by hand instead.
    """
    info = artifact.info
    params = ExportParams(
        model_id=int(model["id"]),
        format="engine",
        precision=info.precision,
        imgsz=info.imgsz,
        dynamic=info.dynamic,
        calib_images=info.calibration_images or 200,
        rebuild=True,
    )
    # The engine file's own mtime (this box's clock), not its recorded build time (another machine's).
    try:
        mtime = artifact.path.stat().st_mtime
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
                params.model_id,
                params.precision,
                params.imgsz,
                int(params.dynamic),
                written.isoformat(timespec="milliseconds"),
            ],
        ).fetchone()
        if failed:
            logger.warning(
                "rebuild of engine %s of model %s failed before (export %s); not queued again",
                artifact.file,
                params.model_id,
                failed[0],
            )
            return None
        return _queue_export(db, params, None)
    except Conflict:
        return None
    finally:
        db.conn.close()
