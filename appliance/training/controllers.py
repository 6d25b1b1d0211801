"""HTTP routes for training jobs, their live events and plots, and the base models to start from."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter, PathParameter, QueryParameter
from litestar.response import File, ServerSentEvent

from appliance.dependencies import DB, Caller, Settings
from appliance.jobs.sse import MAX_EVENT_ID, job_events_response, last_event_id
from appliance.training import service
from appliance.training.schemas import BaseModelRead, TrainingJobCreate, TrainingJobRead, TrainingJobSummary

Id = Annotated[int, Parameter(gt=0)]


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

    @get("/{job_id:int}", operation_id="getTrainingJob", sync_to_thread=True)
    def get_job(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TrainingJobRead:
        return service.get_training_job(db, config, job_id, user)

    @post("/{job_id:int}/cancel", operation_id="cancelTrainingJob", status_code=202, sync_to_thread=True)
    def cancel(self, job_id: Id, db: DB, user: Caller, config: Settings) -> TrainingJobRead:
        return service.cancel_training_job(db, config, job_id, user)

    @get("/{job_id:int}/events", operation_id="streamTrainingJobEvents", sync_to_thread=True)
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
        return job_events_response(config.db_path, job_id, last_event_id(request, after))

    @get("/{job_id:int}/plots/{name:str}", operation_id="getTrainingPlot", sync_to_thread=True)
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
