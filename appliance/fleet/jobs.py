"""Job kind "fleet_import" (io lane): a fleet dataset from the store into a local dataset, new objects only, with
the boxes as pre-labels and the usual import report."""

from __future__ import annotations

import logging

import msgspec

from appliance.caller import CurrentUser, require_admin
from appliance.catalog import writable_dataset
from appliance.config import Config
from appliance.db import Database
from appliance.fleet import hardcases
from appliance.fleet.schemas import FleetImportCreate
from appliance.fleet.store import FleetStore
from appliance.jobs import service as jobs
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.transfers.contracts import ImportParams, ImportResult
from appliance.transfers.importer import ImportCancelled, run_import_job
from appliance.transfers.report import ImportReport
from appliance.transfers.schemas import TransferJobRead
from appliance.transfers.service import job_read
from appliance.transfers.uploads import staging_root

logger = logging.getLogger(__name__)

KIND = "fleet_import"


class FleetImportParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    dataset: str  # the fleet dataset's name in the store
    box_ids: list[str] = msgspec.field(default_factory=list)  # empty: every box's part
    recovered: bool = False


class FleetImportResult(msgspec.Struct, kw_only=True):
    download: hardcases.Downloaded
    report: ImportResult | None  # None: nothing new to import


def create_fleet_import(
    db: Database, config: Config, dataset_id: int, body: FleetImportCreate, user: CurrentUser
) -> TransferJobRead:
    require_admin(user)
    writable_dataset(db, dataset_id, user)
    FleetStore(config)  # refused now (409) when no store is configured
    params = FleetImportParams(dataset=body.dataset, box_ids=list(body.box_ids))
    job_id = jobs.create_job(db, KIND, params, user_id=user.id, dataset_id=dataset_id)
    return job_read(jobs.get_job(db, job_id))


def get_fleet_import(db: Database, job_id: int, user: CurrentUser) -> TransferJobRead:
    require_admin(user)
    return job_read(jobs.get_job(db, job_id, KIND))


def run_fleet_import(context: JobContext) -> FleetImportResult:
    params: FleetImportParams = context.params
    config = context.config
    dataset_id = context.job["dataset_id"]
    folder = staging_root(config) / f"fleet-{context.job_id}"
    hardcases.remove_folder(folder)  # left by an interrupted run
    folder.mkdir(parents=True)
    try:
        context.progress(force=True, stage="downloading", dataset=params.dataset)
        counts, fetched = hardcases.download_dataset(
            context.db, config, FleetStore(config), params.dataset, params.box_ids, dataset_id, folder
        )
        context.progress(force=True, stage="importing", download=msgspec.to_builtins(counts))
        if not fetched:
            context.log(
                f"nothing new in fleet dataset {params.dataset} ({counts.already_imported} imported before)"
            )
            return FleetImportResult(download=counts, report=None)

        def progress(report: ImportReport, force: bool, final: bool = False) -> None:
            current = report.result() if final else report.progress()
            context.progress(
                force=force, download=msgspec.to_builtins(counts), **msgspec.to_builtins(current)
            )
            if not final and context.worker_stop.is_set():
                raise WorkerStopping()

        import_params = ImportParams(
            source="path",
            path=str(folder),
            format="voc",
            unknown_classes="add",
            allow_any_path=True,
            prelabels=True,
        )
        try:
            report = run_import_job(
                context.db, config, import_params, job_id=context.job_id, dataset_id=dataset_id,
                created_by=context.job["created_by"], progress=progress, cancelled=context.cancel_requested,
            )  # fmt: skip
        except ImportCancelled as exc:
            raise JobCancelled(exc.report.result()) from None
        hardcases.record_imported(context.db, dataset_id, context.job_id, fetched)
        result = report.result()
        context.log(
            f"fleet dataset {params.dataset}: {counts.new} new objects; imported {result.imported}, "
            f"duplicates {result.duplicates}, skipped {result.skipped}"
        )
        return FleetImportResult(download=counts, report=result)
    finally:
        hardcases.remove_folder(folder)


def recover_fleet_import(context: JobContext) -> None:
    """Idempotent: what was imported is recorded, the rest is downloaded again."""
    context.requeue(recovered=True)


register_job_kind(
    JobKind(
        name=KIND,
        lane="io",
        run=run_fleet_import,
        recover=recover_fleet_import,
        params_type=FleetImportParams,
    )
)
