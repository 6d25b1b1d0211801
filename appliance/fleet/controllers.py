"""HTTP routes of the fleet: keys, signed bundles (download, upload, USB, the store), boxes, rollouts, hard cases."""

from __future__ import annotations

import contextlib
from typing import Annotated

import anyio
from litestar import Controller, Request, delete, get, post
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.response import File

from appliance.caller import require_admin
from appliance.dependencies import DB, Caller, Settings
from appliance.drives import resolve_under_roots
from appliance.errors import Invalid
from appliance.fleet import bundles, keys, publishing
from appliance.fleet.schemas import (
    BundleCreate,
    BundleImportRead,
    BundleRead,
    KeyRead,
    PathImport,
    PublishRead,
    StoreBundleRead,
    StoreImport,
    TrustedKeyCreate,
)
from appliance.models.registry import model_row
from appliance.transfers import uploads

Id = Annotated[int, Parameter(gt=0)]
KeyId = Annotated[str, Parameter(pattern=r"^[0-9A-Fa-f]{16}$")]


class FleetBundlesController(Controller):
    path = "/fleet"
    tags = ["fleet"]

    # --- keys --------------------------------------------------------------------------------------------

    @get("/keys", operation_id="listFleetKeys", sync_to_thread=True)
    def list_keys(self, db: DB, user: Caller, config: Settings) -> list[KeyRead]:
        """This box's public key (made on first use) and the keys it trusts."""
        return keys.key_reads(db, config)

    @post("/keys", operation_id="trustFleetKey", sync_to_thread=True, status_code=201)
    def trust_key(self, data: JSONBody[TrustedKeyCreate], db: DB, user: Caller, config: Settings) -> KeyRead:
        return keys.trust_key(db, config, data, user)

    @delete("/keys/{key_id:str}", operation_id="distrustFleetKey", sync_to_thread=True, status_code=204)
    def distrust_key(self, key_id: KeyId, db: DB, user: Caller) -> None:
        keys.distrust_key(db, key_id, user)

    # --- bundles -----------------------------------------------------------------------------------------

    @post(
        "/models/{model_id:int}/bundle",
        operation_id="createModelBundle",
        sync_to_thread=True,
        status_code=200,
    )
    def create_bundle(
        self, model_id: Id, db: DB, user: Caller, config: Settings, data: JSONBody[BundleCreate | None] = None
    ) -> BundleRead:
        """Sign the model's bundle with this box's key (once; later calls return the same bundle)."""
        body = data or BundleCreate()
        version = 0
        if not bundles.bundle_identity(db, model_id) and config.fleet_store_bucket:
            with contextlib.suppress(Exception):  # an unreachable store must not stop a USB hand-over
                name = body.name or bundles.default_bundle_name(db, model_row(db, model_id))
                version = publishing.store_version(db, config, name)
        return bundles.export_bundle(db, config, model_id, user, body, store_version=version)

    @get(
        "/models/{model_id:int}/bundle",
        operation_id="downloadModelBundle",
        sync_to_thread=True,
        media_type="application/octet-stream",
    )
    def download_bundle(self, model_id: Id, db: DB, user: Caller, config: Settings) -> File:
        read, path = bundles.bundle_file(db, config, model_id, user)
        return File(
            path,
            filename=read.file,
            media_type="application/octet-stream",
            headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @post(
        "/bundles",
        operation_id="uploadBundle",
        status_code=201,
        request_max_body_size=None,  # streamed to staging/uploads under max_import_mb, then fleet_max_bundle_mb
        description="Raw request body: a signed model bundle (Content-Type application/octet-stream).",
    )
    async def upload_bundle(
        self, request: Request, db: DB, user: Caller, config: Settings, deploy: FromQuery[bool] = False
    ) -> BundleImportRead:
        require_admin(user)
        announced = uploads.announced_size(config, request.headers.get("content-length"))
        upload = await uploads.receive_archive(config, request.stream(), announced)
        try:
            return await anyio.to_thread.run_sync(
                lambda: bundles.import_bundle_file(db, config, upload, user, deploy=deploy)
            )
        finally:
            upload.unlink(missing_ok=True)

    @post("/bundles/path", operation_id="importBundleFromPath", sync_to_thread=True, status_code=201)
    def import_path(
        self, data: JSONBody[PathImport], db: DB, user: Caller, config: Settings
    ) -> BundleImportRead:
        """A bundle file on a USB drive (under import_roots)."""
        require_admin(user)
        path = resolve_under_roots(config, data.path, example="/media/usb0/parts-v3.bundle")
        if not path.is_file():
            raise Invalid(f"{data.path[:300]} is not a file")
        return bundles.import_bundle_file(db, config, path, user, deploy=data.deploy)

    # --- the store ---------------------------------------------------------------------------------------

    @post(
        "/models/{model_id:int}/publish",
        operation_id="publishModelBundle",
        sync_to_thread=True,
        status_code=200,
    )
    def publish(
        self, model_id: Id, db: DB, user: Caller, config: Settings, data: JSONBody[BundleCreate | None] = None
    ) -> PublishRead:
        return publishing.publish_model(db, config, model_id, user, data or BundleCreate())

    @get("/store/bundles", operation_id="listStoreBundles", sync_to_thread=True)
    def store_bundles(self, db: DB, user: Caller, config: Settings) -> list[StoreBundleRead]:
        return publishing.store_bundles(db, config, user)

    @post("/store/imports", operation_id="importStoreBundle", sync_to_thread=True, status_code=201)
    def import_store(
        self, data: JSONBody[StoreImport], db: DB, user: Caller, config: Settings
    ) -> BundleImportRead:
        return publishing.import_from_store(db, config, data, user)
