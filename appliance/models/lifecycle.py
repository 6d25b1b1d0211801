"""A model's life after training: deploy and undeploy, delete (row and files together), download an ONNX export."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import msgspec

from appliance.caller import CurrentUser, require_admin
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, NotFound
from appliance.inference.engines import check_engine_pin
from appliance.models.artifacts import artifact_path, artifacts_on_disk, model_dir
from appliance.models.deploy_check import refuse_broken_rules
from appliance.models.registry import LAST_DELETED_ID, ModelRow, get_model, manageable_model, readable_model
from appliance.models.schemas import EnginePinUpdate, ModelRead
from appliance.storage import fsync_dir

logger = logging.getLogger(__name__)

TRASH_PREFIX = ".deleted-"  # models/.deleted-<id>-<random>: a deleted model's folder on its way out


def deploy_model(
    db: Database, config: Config, model_id: int, user: CurrentUser, deploy_anyway: bool = False
) -> ModelRead:
    """Mark the model deployed and every other one not, atomically (the unique index allows one).

    Needs the right to the model (its owner or an admin): deploying replaces what the box's cameras run.
    Refused (409) when cameras' rules count classes the model lacks, unless `deploy_anyway`."""
    row = manageable_model(db, model_id, user)
    if not artifacts_on_disk(config, model_id):
        raise Conflict(f"model {model_id} has no completed export; export it to ONNX or TensorRT first")
    with write_transaction(db):
        if not deploy_anyway:
            refuse_broken_rules(db, row)
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1 AND id != ?", [model_id])
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])
    return get_model(db, config, model_id, user)


def undeploy_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> ModelRead:
    """No model is deployed afterwards: the cameras stop running one at their next reload."""
    row = manageable_model(db, model_id, user)
    if not row["deployed"]:
        raise Conflict(f"model {model_id} is not deployed")
    with write_transaction(db):
        db.execute("UPDATE models SET deployed = 0 WHERE id = ?", [model_id])
    return get_model(db, config, model_id, user)


def pin_engine(
    db: Database, config: Config, model_id: int, body: EnginePinUpdate, user: CurrentUser
) -> ModelRead:
    """Admins: the engine this model runs on ("auto": the box's choice); the cameras reload it."""
    require_admin(user)
    readable_model(db, model_id, user)
    check_engine_pin(body.engine, "engine")
    with write_transaction(db):
        db.execute(
            "UPDATE models SET engine = ? WHERE id = ?",
            [None if body.engine == "auto" else body.engine, model_id],
        )
    logger.info("model %s pinned to engine %s by %s", model_id, body.engine, user.username)
    return get_model(db, config, model_id, user)


def _busy_reason(db: Database, config: Config, row: ModelRow) -> str | None:
    """Why the model cannot go now, or None."""
    model_id = int(row["id"])
    if row["deployed"]:
        return f"model {model_id} is deployed; deploy another model or undeploy it first"
    export = db.execute(
        """SELECT e.id FROM model_exports e JOIN jobs j ON j.id = e.job_id
           WHERE e.model_id = ? AND j.status IN ('pending', 'running')""",
        [model_id],
    ).fetchone()
    if export:
        return f"model {model_id} has an export in progress (export {export[0]}); cancel it first"
    weights = str(model_dir(config, model_id) / "best.pt")
    for job_id, params in db.execute(
        "SELECT id, params FROM jobs WHERE kind = 'train' AND status IN ('pending', 'running')"
    ).fetchall():
        try:
            source = msgspec.json.decode(params).get("model_source")
        except (msgspec.DecodeError, AttributeError):
            continue
        if source == weights:
            return f"training job {job_id} starts from model {model_id}; wait for it or cancel it first"
    return None


def _sweep_trash(config: Config) -> None:
    """Folders of deleted models left behind by a crash between the commit and the removal."""
    folder = config.data_path / "models"
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(TRASH_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def delete_model(db: Database, config: Config, model_id: int, user: CurrentUser) -> None:
    """Remove the row (its exports with it) and its folder: never the deployed model, nor one a job still needs.

    The folder is renamed aside inside the transaction and put back if the transaction does not commit, so the
    row and its files go together; the renamed folder is removed after the commit (or, after a crash, by the
    next delete)."""
    _sweep_trash(config)
    folder = model_dir(config, model_id)
    trash = folder.with_name(f"{TRASH_PREFIX}{model_id}-{uuid.uuid4().hex[:8]}")
    moved = False
    try:
        with write_transaction(db):
            row = manageable_model(db, model_id, user)
            reason = _busy_reason(db, config, row)
            if reason:
                raise Conflict(reason)
            db.execute("DELETE FROM models WHERE id = ?", [model_id])
            db.execute(
                """INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET
                     value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)),
                     updated_at = excluded.updated_at""",
                [LAST_DELETED_ID, str(model_id), now_iso()],
            )
            if folder.exists():
                os.replace(folder, trash)
                moved = True
    except BaseException:
        if moved:
            os.replace(trash, folder)  # the row stays: so do its files
        raise
    if moved:
        fsync_dir(folder.parent)
        shutil.rmtree(trash, ignore_errors=True)
    logger.info("model %s deleted by %s", model_id, user.username)


def onnx_export_file(db: Database, config: Config, model_id: int, export_id: int, user: CurrentUser) -> Path:
    """The file of a completed ONNX export, for download (its name comes from the export's fields, never a path)."""
    readable_model(db, model_id, user)
    row = db.execute(
        "SELECT format, precision, imgsz, dynamic, status FROM model_exports WHERE id = ? AND model_id = ?",
        [export_id, model_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"model {model_id} has no export {export_id}")
    fmt, precision, imgsz, dynamic, status = row
    if fmt != "onnx":
        raise NotFound(
            f"export {export_id} is a TensorRT engine, built for this box's GPU: only ONNX files download"
        )
    if status != "completed":
        raise Conflict(f"export {export_id} is {status}; only a completed export can be downloaded")
    path = artifact_path(config, model_id, fmt, precision, int(imgsz), bool(dynamic))
    if not path.is_file():
        raise NotFound(f"the file of export {export_id} is missing on disk")
    return path


def download_name(model_id: int, model_name: str, file_name: str) -> str:
    """model-<id>-<name>-model_640.onnx, with the name reduced to letters, digits, '-' and '_' (a header value)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in model_name)[:60].strip(
        "-"
    )
    return f"model-{model_id}{'-' + safe if safe else ''}-{file_name}"
