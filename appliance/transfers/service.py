"""The web side of transfers: queue imports and USB exports as worker jobs, list, show and cancel them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from appliance import catalog
from appliance.caller import CurrentUser, require_writer
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Invalid, NotFound
from appliance.jobs import service as jobs
from appliance.jobs.waiting import waiting_reason
from appliance.transfers.contracts import ImportParams, UsbExportParams
from appliance.transfers.schemas import (
    ImportCreate,
    ImportFormat,
    TransferJobRead,
    TransferKind,
    UnknownClasses,
    UsbExportCreate,
    VocOrigin,
)
from appliance.transfers.sources import resolve_source

HIDDEN_PARAMS = ("archive", "allow_any_path")  # a staging path and the CLI's trust: not for API clients


def job_read(row: dict[str, Any], waiting: str | None = None) -> TransferJobRead:
    params = {k: v for k, v in row["params"].items() if k not in HIDDEN_PARAMS}
    return msgspec.convert({**row, "params": params, "waiting_reason": waiting}, TransferJobRead)


def visible_job(db: Database, job_id: int, kind: TransferKind, user: CurrentUser) -> dict[str, Any]:
    """The job's row if the caller started it, is an admin, or may see its dataset; else not found."""
    job = jobs.get_job(db, job_id, kind)
    if user.is_admin or job["created_by"] == user.id:
        return job
    if job["dataset_id"] is not None:
        try:
            catalog.readable_dataset(db, job["dataset_id"], user)
            return job
        except NotFound:
            pass
    raise NotFound(f"job {job_id} not found")


def get_transfer_job(
    db: Database, job_id: int, kind: TransferKind, user: CurrentUser, runtime_path: Path | None = None
) -> TransferJobRead:
    job = visible_job(db, job_id, kind, user)
    return job_read(job, waiting_reason(db, runtime_path, job) if runtime_path else None)


def cancel_transfer_job(db: Database, job_id: int, kind: TransferKind, user: CurrentUser) -> TransferJobRead:
    """Its creator or an admin may cancel a job; anyone else needs write access to its dataset."""
    job = visible_job(db, job_id, kind, user)
    if not (user.is_admin or job["created_by"] == user.id) and job["dataset_id"] is not None:
        catalog.writable_dataset(db, job["dataset_id"], user)
    return job_read(jobs.request_cancel(db, job_id, kind))


def list_transfer_jobs(
    db: Database,
    kind: TransferKind,
    user: CurrentUser,
    dataset_id: int | None = None,
    limit: int = 50,
    runtime_path: Path | None = None,
) -> list[TransferJobRead]:

    def visible(job: dict[str, Any]) -> bool:
        if dataset_id is not None and job["dataset_id"] != dataset_id:
            return False
        try:
            visible_job(db, job["id"], kind, user)
        except NotFound:
            return False
        return True

    return [
        job_read(r, waiting_reason(db, runtime_path, r) if runtime_path else None)
        for r in jobs.list_visible_jobs(db, kind, visible, limit)
    ]


def _queue(
    db: Database,
    kind: TransferKind,
    params: ImportParams | UsbExportParams,
    user: CurrentUser,
    dataset_id: int,
) -> TransferJobRead:
    job_id = jobs.create_job(db, kind, params, user_id=user.id, dataset_id=dataset_id)
    return job_read(jobs.get_job(db, job_id))


def create_import(
    db: Database, config: Config, dataset_id: int, body: ImportCreate, user: CurrentUser
) -> TransferJobRead:
    """Queue an import of a folder (or archive file) under the import roots; checked now, run by the worker."""
    catalog.writable_dataset(db, dataset_id, user)
    return _queue(db, "import", path_import_params(config, body), user, dataset_id)


def path_import_params(config: Config, body: ImportCreate, *, allow_any_path: bool = False) -> ImportParams:
    """An import of a folder or archive file, its path checked now (under the import roots unless the CLI in
    the shell allows any path)."""
    source = resolve_source(config, body.path, allow_any=allow_any_path)
    return ImportParams(
        source="path",
        path=str(source),
        format=body.format,
        unknown_classes=body.unknown_classes,
        voc_origin=body.voc_origin,
        allow_any_path=allow_any_path,
    )


def create_archive_import(
    db: Database,
    dataset_id: int,
    archive: Path,
    *,
    filename: str,
    fmt: ImportFormat,
    unknown_classes: UnknownClasses,
    user: CurrentUser,
    voc_origin: VocOrigin = 0,
) -> TransferJobRead:
    """Queue an import of an archive already streamed into staging/uploads/ (the job removes it at the end)."""
    catalog.writable_dataset(db, dataset_id, user)
    params = ImportParams(
        source="archive",
        archive=str(archive),
        filename=filename[:255],
        format=fmt,
        unknown_classes=unknown_classes,
        voc_origin=voc_origin,
    )
    return _queue(db, "import", params, user, dataset_id)


def create_usb_export(
    db: Database, config: Config, dataset_id: int, body: UsbExportCreate, user: CurrentUser
) -> TransferJobRead:
    """Queue writing the dataset's archive into a folder under the import roots (a USB stick)."""
    row = catalog.readable_dataset(db, dataset_id, user)
    require_writer(user)
    target = resolve_source(config, body.path)
    if not target.is_dir():
        raise Invalid(f"{body.path} is not a folder")
    params = UsbExportParams(
        path=str(target),
        format=body.format,
        dataset_name=row["name"],
        include_unlabeled=body.include_unlabeled,
    )
    return _queue(db, "usb_export", params, user, dataset_id)
