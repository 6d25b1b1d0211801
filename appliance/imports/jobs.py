"""Job kinds of this domain: "import" (folder or archive into a dataset) and "usb_export" (archive onto a stick)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from appliance.clock import now_iso
from appliance.errors import Invalid
from appliance.imports import service, usb_write
from appliance.imports.exporters import archive_name, export_archive
from appliance.imports.sources import resolve_source
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind

logger = logging.getLogger(__name__)


def run_import(context: JobContext) -> dict[str, Any]:
    def progress(report: service.ImportReport, force: bool, final: bool = False) -> None:
        context.progress(force=force, **(report.as_dict() if final else report.progress()))
        if not final and context.worker_stop.is_set():
            raise WorkerStopping()

    try:
        report = service.run_import_job(
            context.db, context.config, context.job, progress=progress, cancelled=context.cancel_requested
        )
    except service.ImportCancelled as exc:
        service.remove_upload(context.config, context.params)
        raise JobCancelled(exc.report.as_dict()) from None
    except WorkerStopping:
        raise
    except Exception:
        service.remove_upload(context.config, context.params)
        raise
    service.remove_upload(context.config, context.params)
    context.log(
        f"imported {report.imported}, duplicates {report.duplicates}, skipped {report.skipped} "
        f"({report.format})"
    )
    return report.as_dict()


def recover_import(context: JobContext) -> None:
    """Imports are idempotent (content hashes): an interrupted one simply runs again."""
    context.requeue(recovered=True)


def run_usb_export(context: JobContext) -> dict[str, Any]:
    """Stage the archive on the data disk, then copy it onto the drive (see appliance.imports.usb_write)."""
    params = context.params
    config = context.config
    target_dir = resolve_source(config, params["path"])
    if not target_dir.is_dir():
        raise Invalid(f"{target_dir} is not a folder")
    name = usb_write.plain_name(
        archive_name(params.get("dataset_name", "dataset"), params["format"], time.strftime("%Y%m%d-%H%M%S"))
    )
    started = time.monotonic()

    def progress(phase: str, done: int) -> None:
        context.progress(phase=phase, bytes_written=done, file=name)
        if context.cancel_requested():
            raise JobCancelled({"phase": phase, "bytes_written": done})

    usb_write.remove_staged(config, context.job_id)  # left by an interrupted earlier run of this job
    staged: Path | None = None
    try:
        chunks = export_archive(
            config, context.job["dataset_id"], params["format"], params.get("include_unlabeled", False)
        )
        staged, size = usb_write.stage_archive(config, context.job_id, name, chunks, progress)
        if usb_write.folder_is_writable(target_dir):
            via = "direct"
            target = usb_write.copy_to_folder(staged, target_dir, name, progress)
        else:
            via = "appliance-usb-write"
            context.progress(
                force=True, phase="waiting for the USB write service", bytes_written=size, file=name
            )
            target = usb_write.hand_over(
                config,
                staged,
                target_dir,
                name,
                context.job_id,
                lambda phase, done: context.progress(phase=phase, bytes_written=done, file=name),
                context.cancel_requested,
                context.worker_stop.is_set,
            )
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    context.log(f"wrote {target} ({size} bytes, {via})")
    return {
        "file": str(target),
        "bytes": size,
        "via": via,
        "seconds": round(time.monotonic() - started, 2),
        "finished_at": now_iso(),
    }


def recover_usb_export(context: JobContext) -> None:
    context.requeue(recovered=True)


register_job_kind(JobKind(name="import", lane="io", run=run_import, recover=recover_import))
register_job_kind(JobKind(name="usb_export", lane="io", run=run_usb_export, recover=recover_usb_export))
