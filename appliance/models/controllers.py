"""HTTP routes for models, exports, deploy, inference on uploads and labeling suggestions (logic beside)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.datastructures import State, UploadFile
from litestar.params import JSONBody, MultipartBody
from litestar.response import File

from appliance.catalog import dataset_row, image_row
from appliance.classes import class_names
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.errors import NotFound, TooLarge
from appliance.ids import RowId
from appliance.imaging.check import FORMATS
from appliance.models import deploy_check, exports, lifecycle, predict, registry
from appliance.models.schemas import (
    DeployCheck,
    DeployRequest,
    EnginePinUpdate,
    ExportCreate,
    ExportRead,
    InferenceRead,
    ModelRead,
    SuggestionsRead,
)
from appliance.storage import read_upload

Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


@dataclass
class InferenceForm:
    image: UploadFile
    model_id: RowId | None = None  # None: the deployed model
    confidence: Fraction = 0.25
    iou: Fraction = 0.45
    max_det: Annotated[int, msgspec.Meta(ge=1, le=3000)] = 300
    precision: Literal["", "fp32", "fp16", "bf16", "int8"] = ""  # "": the model's own


@dataclass
class SuggestionsBody:
    confidence: Fraction = 0.25
    iou: Fraction = 0.45


class ModelController(Controller):
    path = "/models"
    tags = ["models"]

    @get("/", operation_id="listModels", sync_to_thread=True)
    def list_models(self, db: DB, user: Caller, config: Settings) -> list[ModelRead]:
        return registry.list_models(db, config, user)

    @get("/{model_id:int}", operation_id="getModel", sync_to_thread=True)
    def get_model(self, model_id: Id, db: DB, user: Caller, config: Settings) -> ModelRead:
        return registry.get_model(db, config, model_id, user)

    @get("/{model_id:int}/exports", operation_id="listModelExports", sync_to_thread=True)
    def list_exports(self, model_id: Id, db: DB, user: Caller) -> list[ExportRead]:
        return registry.list_exports(db, model_id, user)

    @post("/{model_id:int}/exports", operation_id="createModelExport", sync_to_thread=True)
    def create_export(
        self, model_id: Id, data: JSONBody[ExportCreate], db: DB, user: Caller, config: Settings
    ) -> ExportRead:
        return exports.create_export(db, config, model_id, data, user)

    @post(
        "/{model_id:int}/exports/{export_id:int}/cancel",
        operation_id="cancelModelExport",
        status_code=200,
        sync_to_thread=True,
    )
    def cancel_export(self, model_id: Id, export_id: Id, db: DB, user: Caller) -> ExportRead:
        return exports.cancel_export(db, model_id, export_id, user)

    @get(
        "/{model_id:int}/exports/{export_id:int}/file",
        operation_id="downloadModelExport",
        sync_to_thread=True,
        media_type="application/octet-stream",
    )
    def download_export(self, model_id: Id, export_id: Id, db: DB, user: Caller, config: Settings) -> File:
        """The ONNX file of a completed export (engines are built for one box's GPU and stay there)."""
        path = lifecycle.onnx_export_file(db, config, model_id, export_id, user)
        name = registry.model_row(db, model_id)["name"]
        return File(
            path,
            filename=lifecycle.download_name(model_id, name, path.name),
            media_type="application/octet-stream",
            headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @get("/{model_id:int}/deploy-check", operation_id="checkModelDeploy", sync_to_thread=True)
    def deploy_check(self, model_id: Id, db: DB, user: Caller, config: Settings) -> DeployCheck:
        """What deploying would do: not exported yet, not usable by its own validation, cameras' rules it breaks."""
        return deploy_check.deploy_check(db, config, model_id, user)

    @post("/{model_id:int}/deploy", operation_id="deployModel", status_code=200, sync_to_thread=True)
    def deploy(
        self,
        model_id: Id,
        db: DB,
        user: Caller,
        config: Settings,
        data: JSONBody[DeployRequest | None] = None,
    ) -> ModelRead:
        """409 when cameras following the deployed model have rules counting classes it lacks (named in the
        detail), unless `deploy_anyway`."""
        anyway = bool(data and data.deploy_anyway)
        return lifecycle.deploy_model(db, config, model_id, user, deploy_anyway=anyway)

    @post("/{model_id:int}/undeploy", operation_id="undeployModel", status_code=200, sync_to_thread=True)
    def undeploy(self, model_id: Id, db: DB, user: Caller, config: Settings) -> ModelRead:
        return lifecycle.undeploy_model(db, config, model_id, user)

    @put("/{model_id:int}/engine", operation_id="pinModelEngine", sync_to_thread=True)
    def pin_engine(
        self, model_id: Id, data: JSONBody[EnginePinUpdate], db: DB, user: Caller, config: Settings
    ) -> ModelRead:
        """Admins: the engine (and OpenVINO device) this model runs on; a camera's own pin still wins."""
        return lifecycle.pin_engine(db, config, model_id, data, user)

    @delete("/{model_id:int}", operation_id="deleteModel", status_code=204, sync_to_thread=True)
    def delete_model(self, model_id: Id, db: DB, user: Caller, config: Settings) -> None:
        """The row and its files; refused (409) for the deployed model and one a job still needs."""
        lifecycle.delete_model(db, config, model_id, user)


class InferenceController(Controller):
    path = "/inference"
    tags = ["inference"]

    @post("/", operation_id="runInference", status_code=200, sync_to_thread=True)
    def infer(
        self, data: MultipartBody[InferenceForm], db: DB, user: Caller, config: Settings
    ) -> InferenceRead:
        limit = config.max_image_mb * 1024 * 1024
        content = read_upload(data.image.file, limit)
        if content is None:
            raise TooLarge(f"the image is larger than the {config.max_image_mb} MB limit")
        return predict.run_inference(
            db,
            config,
            user,
            content,
            model_id=data.model_id,
            confidence=data.confidence,
            iou=data.iou,
            max_det=data.max_det,
            precision=data.precision or None,
        )


class SuggestionsController(Controller):
    """Pre-labeling: the deployed model's boxes for a stored image, as proposals (nothing is saved)."""

    path = "/images"
    tags = ["images"]

    @post("/{image_id:int}/suggestions", operation_id="suggestBoxes", status_code=200, sync_to_thread=True)
    def suggest(
        self,
        image_id: Id,
        db: DB,
        user: Caller,
        config: Settings,
        state: State,
        data: JSONBody[SuggestionsBody | None] = None,
    ) -> SuggestionsRead:
        body = data or SuggestionsBody()
        image = image_row(db, image_id, user)
        path = state.image_store.image_path(image["sha256"], FORMATS[image["format"]][0])
        if not path.exists():
            raise NotFound(f"file of image {image_id} is missing on disk")
        names = class_names(dataset_row(db, image["dataset_id"])["classes"])
        return predict.suggest_boxes(
            db, config, user, path, image_id, names, confidence=body.confidence, iou=body.iou
        )
