"""HTTP routes of the fleet: keys, signed bundles (download, upload, USB, the store), boxes, rollouts, hard cases."""

from __future__ import annotations

import contextlib
from typing import Annotated

import anyio
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.response import File

from appliance.caller import require_admin, require_writer
from appliance.dependencies import DB, Caller, Id, QueryFlag, Settings, is_true
from appliance.drives import resolve_under_roots
from appliance.errors import Invalid
from appliance.fleet import bundles, hardcases, keys, publishing, rollouts
from appliance.fleet.schemas import (
    DATASET_NAME,
    ROLLOUT_ID,
    BoxRollback,
    BundleCreate,
    BundleImportRead,
    BundleRead,
    FleetDatasetRead,
    FleetImportCreate,
    FleetRead,
    HardCaseQueued,
    HardCaseUpload,
    KeyRead,
    PathImport,
    PublishRead,
    RolloutCreate,
    RolloutRead,
    SamplingRule,
    SamplingRuleRead,
    StoreBundleRead,
    StoreImport,
    TrustedKeyCreate,
    UploadsRead,
)
from appliance.fleet.view import fleet_read
from appliance.models.registry import model_row
from appliance.transfers import uploads
from appliance.transfers.schemas import TransferJobRead

KeyId = Annotated[str, Parameter(pattern=r"^[0-9A-Fa-f]{16}$")]
RolloutId = Annotated[str, Parameter(pattern=ROLLOUT_ID)]
DatasetName = Annotated[str, Parameter(pattern=DATASET_NAME)]


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
        require_admin(user)  # before the store is asked anything
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
        request_max_body_size=None,  # streamed to staging/uploads under fleet_max_bundle_mb
        description="Raw request body: a signed model bundle (Content-Type application/octet-stream).",
    )
    async def upload_bundle(
        self, request: Request, db: DB, user: Caller, config: Settings, deploy: FromQuery[QueryFlag] = "false"
    ) -> BundleImportRead:
        require_admin(user)
        cap = config.fleet_max_bundle_mb  # refused while it streams, not after max_import_mb reached the disk
        announced = uploads.announced_size(config, request.headers.get("content-length"), cap)
        upload = await uploads.receive_archive(config, request.stream(), announced, cap)
        try:
            return await anyio.to_thread.run_sync(
                lambda: bundles.import_bundle_file(db, config, upload, user, deploy=is_true(deploy))
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


class FleetController(Controller):
    """The Fleet page: every box on the fleet's broker, rollouts in the store, hard cases."""

    path = "/fleet"
    tags = ["fleet"]

    @get("/", operation_id="getFleet", sync_to_thread=True)
    def fleet(self, user: Caller, config: Settings) -> FleetRead:
        return fleet_read(config)

    # --- rollouts ----------------------------------------------------------------------------------------

    @get("/rollouts", operation_id="listRollouts", sync_to_thread=True)
    def list_rollouts(self, db: DB, user: Caller, config: Settings) -> list[RolloutRead]:
        return rollouts.list_rollouts(db, config, user)

    @post("/rollouts", operation_id="createRollout", sync_to_thread=True, status_code=201)
    def create_rollout(
        self, data: JSONBody[RolloutCreate], db: DB, user: Caller, config: Settings
    ) -> RolloutRead:
        return rollouts.create_rollout(db, config, data, user)

    @get("/rollouts/{rollout_id:str}", operation_id="getRollout", sync_to_thread=True)
    def get_rollout(self, rollout_id: RolloutId, db: DB, user: Caller, config: Settings) -> RolloutRead:
        return rollouts.read_rollout(db, config, rollout_id, user)

    @post("/rollouts/{rollout_id:str}/stop", operation_id="stopRollout", sync_to_thread=True, status_code=200)
    def stop_rollout(self, rollout_id: RolloutId, db: DB, user: Caller, config: Settings) -> RolloutRead:
        """No box starts any more; boxes that switched keep the model (roll back to undo that)."""
        return rollouts.add_action(db, config, rollout_id, "stop", user)

    @post(
        "/rollouts/{rollout_id:str}/rollback",
        operation_id="rollBackRollout",
        sync_to_thread=True,
        status_code=200,
    )
    def roll_back(self, rollout_id: RolloutId, db: DB, user: Caller, config: Settings) -> RolloutRead:
        """Every box of the rollout goes back to the model it served before."""
        return rollouts.add_action(db, config, rollout_id, "rollback", user)

    @post(
        "/rollouts/{rollout_id:str}/rollback-box",
        operation_id="rollBackBox",
        sync_to_thread=True,
        status_code=200,
    )
    def roll_back_box(
        self, rollout_id: RolloutId, data: JSONBody[BoxRollback], db: DB, user: Caller, config: Settings
    ) -> RolloutRead:
        return rollouts.add_action(db, config, rollout_id, "rollback_box", user, box=data.box_id)

    # --- hard cases --------------------------------------------------------------------------------------

    @get("/sampling", operation_id="listSamplingRules", sync_to_thread=True)
    def list_rules(self, db: DB, user: Caller) -> list[SamplingRuleRead]:
        return hardcases.list_rules(db)

    @get("/sampling/{camera_id:int}", operation_id="getSamplingRule", sync_to_thread=True)
    def get_rule(self, camera_id: Id, db: DB, user: Caller) -> SamplingRuleRead:
        return hardcases.get_rule(db, camera_id)

    @put("/sampling/{camera_id:int}", operation_id="putSamplingRule", sync_to_thread=True)
    def put_rule(self, camera_id: Id, data: JSONBody[SamplingRule], db: DB, user: Caller) -> SamplingRuleRead:
        return hardcases.put_rule(db, camera_id, data, user)

    @delete(
        "/sampling/{camera_id:int}", operation_id="deleteSamplingRule", sync_to_thread=True, status_code=204
    )
    def delete_rule(self, camera_id: Id, db: DB, user: Caller) -> None:
        hardcases.delete_rule(db, camera_id, user)

    @post(
        "/datasets/{name:str}/uploads", operation_id="uploadHardCases", sync_to_thread=True, status_code=202
    )
    def upload_hard_cases(
        self, name: DatasetName, data: JSONBody[HardCaseUpload], db: DB, user: Caller
    ) -> HardCaseQueued:
        """Queue events for the fleet dataset `name`; the fleet process uploads them (and keeps them until it can)."""
        return hardcases.queue_events(db, name, data, user)

    @get("/uploads", operation_id="getHardCaseUploads", sync_to_thread=True)
    def uploads(self, db: DB, user: Caller) -> UploadsRead:
        return hardcases.uploads_read(db)

    @get("/datasets", operation_id="listFleetDatasets", sync_to_thread=True)
    def datasets(self, user: Caller, config: Settings) -> list[FleetDatasetRead]:
        require_writer(user)  # it lists the store (up to 50 calls): for those who may import what it finds
        return hardcases.list_datasets(config)

    @get("/imports/{job_id:int}", operation_id="getFleetImport", sync_to_thread=True)
    def get_import(self, job_id: Id, db: DB, user: Caller) -> TransferJobRead:
        from appliance.fleet.jobs import get_fleet_import  # the worker's side: imported when used

        return get_fleet_import(db, job_id, user)


class FleetImportController(Controller):
    path = "/datasets"
    tags = ["fleet"]

    @post(
        "/{dataset_id:int}/fleet-imports",
        operation_id="createFleetImport",
        sync_to_thread=True,
        status_code=202,
    )
    def create(
        self, dataset_id: Id, data: JSONBody[FleetImportCreate], db: DB, user: Caller, config: Settings
    ) -> TransferJobRead:
        """A fleet dataset from the store into this dataset (new objects only; boxes as pre-labels)."""
        from appliance.fleet.jobs import create_fleet_import  # the worker's side: imported when used

        return create_fleet_import(db, config, dataset_id, data, user)
