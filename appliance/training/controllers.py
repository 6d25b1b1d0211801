"""HTTP routes for training jobs, their live events and plots, and the base models to start from."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import File, ServerSentEvent

from appliance.caller import require_admin
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.jobs.sse import job_events_response
from appliance.streams import MAX_EVENT_ID, last_event_id, stream_slots
from appliance.training import base_weights, plan, service
from appliance.training.schemas import (
    DEVICE_PATTERN,
    BaseModelRead,
    BaseWeightsRead,
    TrainingJobCreate,
    TrainingJobRead,
    TrainingJobSummary,
    TrainingPlanRead,
    WeightsCandidate,
    WeightsImport,
)


class TrainingJobController(Controller):
    path = "/training-jobs"
    tags = ["training"]

    @post("/", operation_id="createTrainingJob", sync_to_thread=True)
    def create(
        self, data: JSONBody[TrainingJobCreate], db: DB, user: Caller, config: Settings
    ) -> TrainingJobRead:
        return service.create_training_job(db, config, data, user)

    @get("/", operation_id="listTrainingJobs", sync_to_thread=True)
    def list_jobs(
        self,
        db: DB,
        user: Caller,
        config: Settings,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[TrainingJobSummary]:
        return service.list_training_jobs(db, config, user, limit)

    @get("/plan", operation_id="planTraining", sync_to_thread=True)
    def plan(
        self,
        db: DB,
        user: Caller,
        config: Settings,
        dataset_id: Id,
        base_model: Annotated[str, QueryParameter(min_length=1, max_length=200)] = "yolov8n.yaml",
        epochs: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
        imgsz: Annotated[int | None, QueryParameter(ge=32, le=2048)] = None,
        device: Annotated[str, QueryParameter(pattern=DEVICE_PATTERN)] = "auto",
    ) -> TrainingPlanRead:
        """Labeled images and boxes per class, recommended settings, warnings and a time estimate."""
        return plan.training_plan(db, config, user, dataset_id, base_model, epochs, imgsz, device)

    @get("/{job_id:int}", operation_id="getTrainingJob", sync_to_thread=True)
    def get_job(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TrainingJobRead:
        return service.get_training_job(db, config, job_id, user)

    @post("/{job_id:int}/cancel", operation_id="cancelTrainingJob", status_code=202, sync_to_thread=True)
    def cancel(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TrainingJobRead:
        return service.cancel_training_job(db, config, job_id, user)

    @get(
        "/{job_id:int}/events",
        operation_id="streamTrainingJobEvents",
        sync_to_thread=True,
        media_type="text/event-stream",
    )
    def events(
        self,
        job_id: Id,
        request: Request[Any, Any, Any],
        db: DB,
        user: Caller,
        config: Settings,
        after: Annotated[
            int, QueryParameter(ge=0, le=MAX_EVENT_ID, description="stream events after this id")
        ] = 0,
    ) -> ServerSentEvent:
        service.visible_job(db, job_id, user)
        return job_events_response(
            config.db_path,
            job_id,
            last_event_id(request, after),
            slots=stream_slots(request.app.state),
            user_id=user.id,
        )

    @get(
        "/{job_id:int}/plots/{name:str}",
        operation_id="getTrainingPlot",
        sync_to_thread=True,
        media_type="image/*",
    )
    def plot(
        self,
        job_id: Id,
        name: Annotated[str, PathParameter(max_length=64)],
        db: DB,
        user: Caller,
        config: Settings,
    ) -> File:
        path = service.plot_path(db, config, job_id, name, user)
        media = "image/png" if name.endswith(".png") else "image/jpeg"
        return File(
            path,
            media_type=media,
            content_disposition_type="inline",
            headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
        )


class BaseModelController(Controller):
    path = "/models/base"
    tags = ["training"]

    @get("/", operation_id="listBaseModels", sync_to_thread=True)
    def list_base_models(self, db: DB, user: Caller, config: Settings) -> list[BaseModelRead]:
        return service.list_base_models(db, config, user)

    @get("/weights", operation_id="listBaseWeights", sync_to_thread=True)
    def list_weights(self, user: Caller, config: Settings) -> list[BaseWeightsRead]:
        """The weights files present, with their checksum and whether the pinned list knows them."""
        return base_weights.present_weights(config)

    @get("/weights/usb", operation_id="listUsbWeights", sync_to_thread=True)
    def usb_weights(self, user: Caller, config: Settings) -> list[WeightsCandidate]:
        """.pt files on the USB drives under the import roots (admins)."""
        require_admin(user)
        return base_weights.usb_candidates(config)

    @post("/weights", operation_id="importBaseWeights", status_code=201, sync_to_thread=True)
    def import_weights(
        self, data: JSONBody[WeightsImport], user: Caller, config: Settings
    ) -> BaseWeightsRead:
        """Copy a base weights file from a USB drive: only one whose sha256 is in the pinned list (admins)."""
        return base_weights.import_weights(config, data.path, user)
