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
from appliance.errors import Conflict, Forbidden, NotFound
from appliance.models.artifacts import artifacts_on_disk, weights_path
from appliance.models.contracts import NewModel
from appliance.models.schemas import ClassInfo, ExportRead, ModelRead
from appliance.storage import atomic_target

logger = logging.getLogger(__name__)

# A models row as sqlite-utils returns it (the camera and the loaders read it by column name).
ModelRow = dict[str, Any]


def json_object(value: Any) -> dict[str, Any]:
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


def may_see(row: ModelRow, user: CurrentUser) -> bool:
    """A model's own visibility (copied from its dataset when it was trained): admins, its owner, or public.

    It does not follow the dataset afterwards: deleting a private dataset leaves its models private."""
    return (
        user.is_admin
        or (row.get("owner_id") is not None and row["owner_id"] == user.id)
        or bool(row.get("is_public"))
    )


def may_manage(row: ModelRow, user: CurrentUser) -> bool:
    """Deploy, undeploy and delete: admins and the model's owner."""
    return user.is_admin or (
        user.can_write and row.get("owner_id") is not None and row["owner_id"] == user.id
    )


def readable_model(db: Database, model_id: int, user: CurrentUser) -> ModelRow:
    """The model if the caller may see it; otherwise simply not found."""
    row = model_row(db, model_id)
    if not may_see(row, user):
        raise NotFound(f"model {model_id} not found")
    return row


def manageable_model(db: Database, model_id: int, user: CurrentUser) -> ModelRow:
    """The model if the caller may deploy or delete it (403 for one they only see, 404 for one they don't)."""
    row = readable_model(db, model_id, user)
    require_writer(user)
    if not may_manage(row, user):
        raise Forbidden(f"only the owner of model {model_id} or an admin may deploy, undeploy or delete it")
    return row


def deployed_model(db: Database) -> ModelRow | None:
    return next(db.query("SELECT * FROM models WHERE deployed = 1"), None)


def visible_deployed_model(db: Database, user: CurrentUser, when_none: str) -> ModelRow:
    """The deployed model, if the caller may see it (a private model predicts for no one else)."""
    row = deployed_model(db)
    if row is None:
        raise Conflict(when_none)
    if not may_see(row, user):
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
        # A job cancelled or failed before the handler ran leaves the export row behind: show the job's state.
        if row["status"] in ("pending", "running") and r[14] in ("failed", "cancelled"):
            row["status"] = r[14]
        row.update(
            file=row.pop("path"),
            dynamic=bool(row["dynamic"]),
            metadata=json_object(row["metadata"]),
            progress=json_object(r[13]),
        )
        result.append(msgspec.convert(row, ExportRead))
    return result


def export_read(db: Database, model_id: int, export_id: int) -> ExportRead:
    return next(e for e in export_reads(db, model_id) if e.id == export_id)


def _model_read(db: Database, config: Config, row: ModelRow, user: CurrentUser) -> ModelRead:
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
        params=json_object(row["params"]),
        metrics=json_object(row["metrics"]),
        deployed=bool(row["deployed"]),
        created_at=row["created_at"],
        exports=export_reads(db, row["id"]),
        has_weights=weights_path(config, row["id"]).is_file(),
        ready=bool(artifacts_on_disk(config, row["id"])),
        owner_id=row.get("owner_id"),
        is_public=bool(row.get("is_public")),
        can_manage=may_manage(row, user),
        engine=row.get("engine") or "auto",
        runs_on=_runs_on(config, row),
    )


def _runs_on(config: Config, row: ModelRow) -> str:
    """What /inference runs the model on here, without loading it ("" when it has no runnable export)."""
    from appliance.models.loading import plan_run

    try:
        plan = plan_run(config, row)
    except Conflict:
        return ""
    return f"{plan.choice.describe()} {plan.precision}"


def list_models(db: Database, config: Config, user: CurrentUser) -> list[ModelRead]:
    rows = [r for r in db.query("SELECT * FROM models ORDER BY id DESC") if may_see(r, user)]
    return [_model_read(db, config, r, user) for r in rows]


def get_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    return _model_read(db, config, readable_model(db, model_id, user), user)


def list_exports(db: Database, model_id: int, user: CurrentUser) -> list[ExportRead]:
    readable_model(db, model_id, user)
    return export_reads(db, model_id)


# --- registering a trained model (worker side) ----------------------------------------------------------


# The highest model id ever handed out, kept when that model is deleted: ids are never reused, so a job, a
# cache entry or a leftover folder of a deleted model can never be taken for a new one.
LAST_DELETED_ID = "models.last_deleted_id"


def next_model_id(db: Database) -> int:
    row = db.execute(
        """SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM models
                               UNION ALL SELECT MAX(model_id) FROM jobs
                               UNION ALL SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?)""",
        [LAST_DELETED_ID],
    ).fetchone()
    return int(row[0] or 0) + 1


def _visibility_at_training(db: Database, model: NewModel) -> tuple[int | None, bool]:
    """Owner and public flag of the new model: its dataset's, as the job recorded them when it was created and
    as they are now (the stricter of the two); the trainer's and private when the dataset is gone."""
    owner_id, is_public = model.owner_id, model.is_public
    found = None
    if model.dataset_id is not None:
        found = db.execute(
            "SELECT owner_id, is_public FROM datasets WHERE id = ?", [model.dataset_id]
        ).fetchone()
    if found is not None:
        owner_id = found[0]
        is_public = bool(found[1]) and (model.is_public if model.owner_id is not None else True)
    if owner_id is None:
        owner_id, is_public = model.created_by, False
    return owner_id, is_public


def register_model(db: Database, config: Config, model: NewModel, best: Path) -> int:
    """Copy best.pt to models/<id>/best.pt atomically, then insert the row (same transaction holds the id)."""
    name = model.name
    if not name:
        found = None
        if model.dataset_id is not None:
            found = db.execute("SELECT name FROM datasets WHERE id = ?", [model.dataset_id]).fetchone()
        dataset_name = found[0] if found else ""
        name = f"{dataset_name or 'model'} {model.base_model} job {model.job_id}".strip()
    owner_id, is_public = _visibility_at_training(db, model)
    with write_transaction(db):
        model_id = next_model_id(db)
        target = weights_path(config, model_id)
        with best.open("rb") as source, atomic_target(target) as handle:
            shutil.copyfileobj(source, handle, 1024 * 1024)
        db.execute(
            """INSERT INTO models (id, name, dataset_id, job_id, base_model, classes, imgsz, params, metrics,
                                   snapshot, path, created_by, created_at, owner_id, is_public)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
                owner_id,
                int(is_public),
            ],
        )
        db.execute("UPDATE jobs SET model_id = ? WHERE id = ?", [model_id, model.job_id])
    logger.info("job %s: model %s registered at %s", model.job_id, model_id, target)
    return model_id
