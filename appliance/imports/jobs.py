"""Job kinds of this domain: "import" (folder or archive into a dataset) and "usb_export" (archive onto a stick)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

from appliance.clock import now_iso
from appliance.errors import Invalid
from appliance.imports import service
from appliance.imports.exporters import archive_name, export_archive
from appliance.imports.sources import resolve_source
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.storage import fsync_dir

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
    params = context.params
    config = context.config
    target_dir = resolve_source(config, params["path"])
    if not target_dir.is_dir():
        raise Invalid(f"{target_dir} is not a folder")
    dataset_id = context.job["dataset_id"]
    name = params.get("dataset_name", "dataset")
    target = target_dir / archive_name(name, params["format"], time.strftime("%Y%m%d-%H%M%S"))
    partial = target.with_name(f".{target.name}.part")
    written = 0
    started = time.monotonic()
    try:
        with open(partial, "wb") as handle:
            for chunk in export_archive(
                config, dataset_id, params["format"], params.get("include_unlabeled", False)
            ):
                handle.write(chunk)
                written += len(chunk)
                if shutil.disk_usage(target_dir).free < 1024 * 1024:
                    raise Invalid(f"the drive at {target_dir} is full")
                context.progress(bytes_written=written, file=target.name)
                if context.cancel_requested():
                    raise JobCancelled({"bytes_written": written})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
        fsync_dir(target_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {
        "file": str(target),
        "bytes": written,
        "seconds": round(time.monotonic() - started, 2),
        "finished_at": now_iso(),
    }


def recover_usb_export(context: JobContext) -> None:
    context.requeue(recovered=True)


register_job_kind(JobKind(name="import", lane="io", run=run_import, recover=recover_import))
register_job_kind(JobKind(name="usb_export", lane="io", run=run_usb_export, recover=recover_usb_export))
