"""HTTP routes for imports (USB folders, streamed archive uploads), exports (download, USB) and their jobs."""

from __future__ import annotations

from typing import Annotated

import anyio
from litestar import Controller, Request, get, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import Stream

from appliance import catalog
from appliance.caller import require_writer
from appliance.dependencies import DB, Caller, Id, OptionalId, QueryFlag, Settings, is_true
from appliance.transfers import service, uploads
from appliance.transfers.exporters import archive_name, export_archive
from appliance.transfers.schemas import (
    ExportFormat,
    ImportCreate,
    ImportFormat,
    SourceRead,
    TransferJobRead,
    UnknownClasses,
    UsbExportCreate,
    VocOrigin,
)
from appliance.transfers.sources import list_sources

# Narrows a job list to one dataset.
DatasetFilter = OptionalId


class ImportController(Controller):
    path = "/"
    tags = ["imports"]

    @get("/imports/sources", operation_id="listImportSources", sync_to_thread=True)
    def sources(self, user: Caller, config: Settings) -> list[SourceRead]:
        require_writer(user)
        return list_sources(config)

    @get("/imports", operation_id="listImports", sync_to_thread=True)
    def list_imports(
        self,
        db: DB,
        user: Caller,
        config: Settings,
        dataset_id: DatasetFilter = None,
    ) -> list[TransferJobRead]:
        return service.list_transfer_jobs(db, "import", user, dataset_id, runtime_path=config.runtime_path)

    @get("/imports/{job_id:int}", operation_id="getImport", sync_to_thread=True)
    def get_import(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TransferJobRead:
        return service.get_transfer_job(db, job_id, "import", user, config.runtime_path)

    @post("/imports/{job_id:int}/cancel", operation_id="cancelImport", sync_to_thread=True, status_code=200)
    def cancel_import(self, job_id: Id, db: DB, user: Caller) -> TransferJobRead:
        return service.cancel_transfer_job(db, job_id, "import", user)

    @post(
        "/datasets/{dataset_id:int}/imports",
        operation_id="createImport",
        sync_to_thread=True,
        status_code=202,
    )
    def create_import(
        self, dataset_id: Id, data: JSONBody[ImportCreate], db: DB, user: Caller, config: Settings
    ) -> TransferJobRead:
        return service.create_import(db, config, dataset_id, data, user)

    @post(
        "/datasets/{dataset_id:int}/imports/archive",
        operation_id="uploadImportArchive",
        status_code=202,
        request_max_body_size=None,  # capped at max_import_mb by uploads.receive_archive, never held in memory
        description="Raw request body: a zip, tar or tar.gz archive (Content-Type application/octet-stream).",
    )
    async def upload_archive(
        self,
        dataset_id: Id,
        request: Request,
        db: DB,
        user: Caller,
        config: Settings,
        format: FromQuery[ImportFormat] = "auto",  # noqa: A002 - the API's name for it
        unknown_classes: FromQuery[UnknownClasses] = "add",
        filename: Annotated[str, QueryParameter(max_length=255)] = "upload",
        voc_origin: FromQuery[VocOrigin] = 0,
    ) -> TransferJobRead:
        announced = uploads.announced_size(config, request.headers.get("content-length"))
        await anyio.to_thread.run_sync(catalog.writable_dataset, db, dataset_id, user)
        upload = await uploads.receive_archive(config, request.stream(), announced)
        try:
            return await anyio.to_thread.run_sync(
                lambda: service.create_archive_import(
                    db,
                    dataset_id,
                    upload,
                    filename=filename,
                    fmt=format,
                    unknown_classes=unknown_classes,
                    user=user,
                    voc_origin=voc_origin,
                )
            )
        except BaseException:
            upload.unlink(missing_ok=True)
            raise

    @get(
        "/datasets/{dataset_id:int}/export",
        operation_id="exportDataset",
        sync_to_thread=True,
        media_type="application/zip",
    )
    def export(
        self,
        dataset_id: Id,
        db: DB,
        user: Caller,
        config: Settings,
        format: FromQuery[ExportFormat] = "yolo",  # noqa: A002
        include_unlabeled: FromQuery[QueryFlag] = "false",
    ) -> Stream:
        row = catalog.readable_dataset(db, dataset_id, user)
        name = archive_name(row["name"], format)
        return Stream(
            export_archive(config, dataset_id, format, is_true(include_unlabeled)),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    @post(
        "/datasets/{dataset_id:int}/exports/usb",
        operation_id="createUsbExport",
        sync_to_thread=True,
        status_code=202,
    )
    def create_usb_export(
        self, dataset_id: Id, data: JSONBody[UsbExportCreate], db: DB, user: Caller, config: Settings
    ) -> TransferJobRead:
        return service.create_usb_export(db, config, dataset_id, data, user)

    @get("/usb-exports", operation_id="listUsbExports", sync_to_thread=True)
    def list_usb_exports(
        self,
        db: DB,
        user: Caller,
        config: Settings,
        dataset_id: DatasetFilter = None,
    ) -> list[TransferJobRead]:
        return service.list_transfer_jobs(
            db, "usb_export", user, dataset_id, runtime_path=config.runtime_path
        )

    @get("/usb-exports/{job_id:int}", operation_id="getUsbExport", sync_to_thread=True)
    def get_usb_export(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TransferJobRead:
        return service.get_transfer_job(db, job_id, "usb_export", user, config.runtime_path)

    @post(
        "/usb-exports/{job_id:int}/cancel",
        operation_id="cancelUsbExport",
        sync_to_thread=True,
        status_code=200,
    )
    def cancel_usb_export(self, job_id: Id, db: DB, user: Caller) -> TransferJobRead:
        """Stops the archive being written; a copy the USB write service has already started runs to its end."""
        return service.cancel_transfer_job(db, job_id, "usb_export", user)
