"""Job kinds of this domain: "import" (folder or archive into a dataset) and "usb_export" (archive onto a stick)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec

from appliance import catalog
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Invalid
from appliance.jobs import service as jobs
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.storage import ImageStore
from appliance.transfers import usb_write
from appliance.transfers.contracts import (
    ImportParams,
    ImportResult,
    ThumbnailParams,
    ThumbnailResult,
    UsbExportParams,
    UsbExportProgress,
    UsbExportResult,
    UsbWriteVia,
)
from appliance.transfers.exporters import archive_name, export_archive
from appliance.transfers.importer import IMPORT_THREADS, ImportCancelled, run_import_job
from appliance.transfers.report import ImportReport
from appliance.transfers.sources import resolve_source
from appliance.transfers.uploads import remove_upload

logger = logging.getLogger(__name__)


def _record(context: JobContext, progress: msgspec.Struct, *, force: bool = False) -> None:
    """Merge a progress record into the job's progress (its JSON keys, as the console reads them)."""
    context.progress(force=force, **msgspec.to_builtins(progress))


def run_import(context: JobContext) -> ImportResult:
    params: ImportParams = context.params

    def progress(report: ImportReport, force: bool, final: bool = False) -> None:
        _record(context, report.result() if final else report.progress(), force=force)
        if not final and context.worker_stop.is_set():
            raise WorkerStopping()

    try:
        report = run_import_job(
            context.db,
            context.config,
            params,
            job_id=context.job_id,
            dataset_id=context.job["dataset_id"],
            created_by=context.job["created_by"],
            progress=progress,
            cancelled=context.cancel_requested,
        )
    except ImportCancelled as exc:
        remove_upload(context.config, params)
        queue_thumbnail_pass(context.db, context.job["created_by"], context.job["dataset_id"])
        raise JobCancelled(exc.report.result()) from None
    except WorkerStopping:
        raise
    except Exception:
        remove_upload(context.config, params)
        queue_thumbnail_pass(context.db, context.job["created_by"], context.job["dataset_id"])
        raise
    remove_upload(context.config, params)
    queue_thumbnail_pass(context.db, context.job["created_by"], context.job["dataset_id"])
    context.log(
        f"imported {report.imported}, duplicates {report.duplicates}, skipped {report.skipped} "
        f"({report.format})"
    )
    return report.result()


def queue_thumbnail_pass(db: Database, user_id: int | None, dataset_id: int | None) -> int | None:
    """Queue the background pass after an import, unless one is already waiting (it serves every file)."""
    with write_transaction(db):
        waiting = db.execute("SELECT 1 FROM jobs WHERE kind = 'thumbnails' AND status = 'pending'").fetchone()
    if waiting:
        return None
    return jobs.create_job(db, "thumbnails", ThumbnailParams(), user_id=user_id, dataset_id=dataset_id)


def run_thumbnails(context: JobContext) -> ThumbnailResult:
    """Decode every file an import stored unchecked: its thumbnail, or the corrupt mark."""
    started = time.monotonic()
    made, corrupt = catalog.check_pending_files(
        context.db,
        ImageStore(context.config),
        context.config,
        threads=IMPORT_THREADS,
        stop=lambda: context.worker_stop.is_set(),
    )
    seconds = time.monotonic() - started
    context.log(f"thumbnails made {made}, corrupt {corrupt}")
    return ThumbnailResult(
        made=made, corrupt=corrupt, images_per_s=round((made + corrupt) / seconds, 1) if seconds else 0.0
    )


def recover_thumbnails(context: JobContext) -> None:
    context.requeue(recovered=True)


def recover_import(context: JobContext) -> None:
    """Imports are idempotent (content hashes): an interrupted one simply runs again."""
    context.requeue(recovered=True)


def run_usb_export(context: JobContext) -> UsbExportResult:
    """Stage the archive on the data disk, then copy it onto the drive (see appliance.transfers.usb_write)."""
    params: UsbExportParams = context.params
    config = context.config
    target_dir = resolve_source(config, params.path)
    if not target_dir.is_dir():
        raise Invalid(f"{target_dir} is not a folder")
    name = usb_write.plain_name(
        archive_name(params.dataset_name, params.format, time.strftime("%Y%m%d-%H%M%S"))
    )
    started = time.monotonic()

    def progress(phase: str, done: int) -> None:
        _record(context, UsbExportProgress(phase=phase, bytes_written=done, file=name))

    def staging_progress(phase: str, done: int) -> None:
        progress(phase, done)
        if context.cancel_requested():
            raise JobCancelled(UsbExportProgress(phase=phase, bytes_written=done))

    usb_write.remove_staged(config, context.job_id)  # left by an interrupted earlier run of this job
    staged: Path | None = None
    try:
        chunks = export_archive(config, context.job["dataset_id"], params.format, params.include_unlabeled)
        staged, size = usb_write.stage_archive(config, context.job_id, name, chunks, staging_progress)
        if usb_write.folder_is_writable(target_dir):
            via: UsbWriteVia = "direct"
            target = usb_write.copy_to_folder(staged, target_dir, name, staging_progress)
        else:
            via = "appliance-usb-write"
            _record(
                context, UsbExportProgress(phase=usb_write.WAITING, bytes_written=size, file=name), force=True
            )
            target = usb_write.hand_over(
                config,
                staged,
                target_dir,
                name,
                context.job_id,
                progress,
                context.cancel_requested,
                context.worker_stop.is_set,
            )
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    context.log(f"wrote {target} ({size} bytes, {via})")
    return UsbExportResult(
        file=str(target),
        bytes=size,
        via=via,
        seconds=round(time.monotonic() - started, 2),
        finished_at=now_iso(),
    )


def recover_usb_export(context: JobContext) -> None:
    context.requeue(recovered=True)


register_job_kind(
    JobKind(name="import", lane="io", run=run_import, recover=recover_import, params_type=ImportParams)
)
register_job_kind(
    JobKind(
        name="thumbnails",
        lane="io",
        run=run_thumbnails,
        recover=recover_thumbnails,
        params_type=ThumbnailParams,
    )
)
register_job_kind(
    JobKind(
        name="usb_export",
        lane="io",
        run=run_usb_export,
        recover=recover_usb_export,
        params_type=UsbExportParams,
    )
)
