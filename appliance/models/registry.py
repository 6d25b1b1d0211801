"""The model registry: models rows, who may see them, their API views, deploy, and registering a trained one."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import msgspec

from appliance.caller import CurrentUser, require_writer
from appliance.classes import dump_class_names, parse_classes
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, NotFound
from appliance.models.artifacts import artifacts_on_disk, weights_path
from appliance.models.contracts import NewModel
from appliance.models.schemas import ClassInfo, ExportRead, ModelRead
from appliance.storage import atomic_target

logger = logging.getLogger(__name__)

# A models row as sqlite-utils returns it (the camera and the loaders read it by column name).
ModelRow = dict[str, Any]


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON column shown as an object by the API; missing or unreadable is an empty one."""
    if isinstance(value, str | bytes):
        try:
            decoded = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return value if isinstance(value, dict) else {}


# --- rows and visibility ---------------------------------------------------------------------------


def model_row(db: Database, model_id: int) -> ModelRow:
    row = next(db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)
    if row is None:
        raise NotFound(f"model {model_id} not found")
    return row


def _visible(db: Database, row: ModelRow, user: CurrentUser) -> bool:
    if user.is_admin or row.get("dataset_id") is None:
        return True
    found = db.execute(
        "SELECT owner_id, is_public FROM datasets WHERE id = ?", [row["dataset_id"]]
    ).fetchone()
    return found is None or found[0] == user.id or bool(found[1])


def readable_model(db: Database, model_id: int, user: CurrentUser) -> ModelRow:
    """The model if the caller may see its dataset; otherwise simply not found."""
    row = model_row(db, model_id)
    if not _visible(db, row, user):
        raise NotFound(f"model {model_id} not found")
    return row


def deployed_model(db: Database) -> ModelRow | None:
    return next(db.query("SELECT * FROM models WHERE deployed = 1"), None)


def visible_deployed_model(db: Database, user: CurrentUser, when_none: str) -> ModelRow:
    """The deployed model, if the caller may see its dataset (a private dataset's model predicts for no one else)."""
    row = deployed_model(db)
    if row is None:
        raise Conflict(when_none)
    if not _visible(db, row, user):
        raise NotFound(f"model {row['id']} not found")
    return row


# --- views -------------------------------------------------------------------------------------------


_EXPORT_COLUMNS = (
    "id", "model_id", "job_id", "format", "precision", "imgsz", "dynamic", "status", "path", "metadata",
    "error", "created_at", "finished_at",
)  # fmt: skip


def export_reads(db: Database, model_id: int) -> list[ExportRead]:
    """A model's exports, oldest first, with their job's progress."""
    columns = ", ".join(f"e.{name}" for name in _EXPORT_COLUMNS)
    rows = db.execute(
        f"""SELECT {columns}, j.progress, j.status
            FROM model_exports e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.model_id = ? ORDER BY e.id""",
        [model_id],
    ).fetchall()
    result = []
    for r in rows:
        row = dict(zip(_EXPORT_COLUMNS, r[:13], strict=True))
        status = row["status"]
        # A job cancelled or failed before the handler ran leaves the export row behind: show the job's state.
        if status in ("pending", "running") and r[14] in ("failed", "cancelled"):
            status = r[14]
        result.append(
            ExportRead(
                id=row["id"],
                model_id=row["model_id"],
                job_id=row["job_id"],
                format=row["format"],
                precision=row["precision"],
                imgsz=row["imgsz"],
                dynamic=bool(row["dynamic"]),
                status=status,
                file=row["path"],
                metadata=_json_object(row["metadata"]),
                error=row["error"],
                created_at=row["created_at"],
                finished_at=row["finished_at"],
                progress=_json_object(r[13]),
            )
        )
    return result


def export_read(db: Database, model_id: int, export_id: int) -> ExportRead:
    return next(e for e in export_reads(db, model_id) if e.id == export_id)


def _model_read(db: Database, config: Config, row: ModelRow) -> ModelRead:
    dataset_name = None
    if row.get("dataset_id") is not None:
        found = db.execute("SELECT name FROM datasets WHERE id = ?", [row["dataset_id"]]).fetchone()
        dataset_name = found[0] if found else None
    return ModelRead(
        id=row["id"],
        name=row["name"],
        dataset_id=row["dataset_id"],
        dataset_name=dataset_name,
        job_id=row["job_id"],
        base_model=row["base_model"],
        classes=[ClassInfo(name=c.name, color=c.color) for c in parse_classes(row["classes"])],
        imgsz=row["imgsz"],
        params=_json_object(row["params"]),
        metrics=_json_object(row["metrics"]),
        deployed=bool(row["deployed"]),
        created_at=row["created_at"],
        exports=export_reads(db, row["id"]),
        has_weights=weights_path(config, row["id"]).is_file(),
        ready=bool(artifacts_on_disk(config, row["id"])),
    )


def list_models(db: Database, config: Config, user: CurrentUser) -> list[ModelRead]:
    rows = [r for r in db.query("SELECT * FROM models ORDER BY id DESC") if _visible(db, r, user)]
    return [_model_read(db, config, r) for r in rows]


def get_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    return _model_read(db, config, readable_model(db, model_id, user))


def list_exports(db: Database, model_id: int, user: CurrentUser) -> list[ExportRead]:
    readable_model(db, model_id, user)
    return export_reads(db, model_id)


# --- deploy ------------------------------------------------------------------------------------------


def deploy_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    """Mark the model deployed and every other one not, atomically (the unique index allows one)."""
    readable_model(db, model_id, user)
    require_writer(user)
    if not artifacts_on_disk(config, model_id):
        raise Conflict(f"model {model_id} has no completed export; export it to ONNX or TensorRT first")
    with write_transaction(db):
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1 AND id != ?", [model_id])
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    return get_model(db, config, model_id, user)


# --- registering a trained model (worker side) ----------------------------------------------------------


def register_model(db: Database, config: Config, model: NewModel, best: Path) -> int:
    """Copy best.pt to models/<id>/best.pt atomically, then insert the row (same transaction holds the id)."""
    name = model.name
    if not name:
        found = None
        if model.dataset_id is not None:
            found = db.execute("SELECT name FROM datasets WHERE id = ?", [model.dataset_id]).fetchone()
        dataset_name = found[0] if found else ""
        name = f"{dataset_name or 'model'} {model.base_model} job {model.job_id}".strip()
    with write_transaction(db):
        model_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM models").fetchone()[0])
        target = weights_path(config, model_id)
        with best.open("rb") as source, atomic_target(target) as handle:
            shutil.copyfileobj(source, handle, 1024 * 1024)
        db.execute(
            """INSERT INTO models (id, name, dataset_id, job_id, base_model, classes, imgsz, params, metrics,
                                   snapshot, path, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                model_id,
                name,
                model.dataset_id,
                model.job_id,
                model.base_model,
                dump_class_names(model.classes),
                model.imgsz,
                msgspec.json.encode(model.params).decode(),
                msgspec.json.encode(model.metrics).decode(),
                msgspec.json.encode(model.snapshot).decode(),
                str(target),
                model.created_by,
                now_iso(),
            ],
        )
        db.execute("UPDATE jobs SET model_id = ? WHERE id = ?", [model_id, model.job_id])
    logger.info("job %s: model %s registered at %s", model.job_id, model_id, target)
    return model_id
