"""HTTP routes of model evaluations: ask for one, read them, their images, compare two (logic in service.py)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import JSONBody, QueryParameter

from appliance.dependencies import DB, Caller, Id, Settings
from appliance.evaluation import service
from appliance.evaluation.schemas import (
    CompareRead,
    EvaluationBrief,
    EvaluationCreate,
    EvaluationImagePage,
    EvaluationRead,
    ImageFilter,
)


class ModelEvaluationsController(Controller):
    path = "/models/{model_id:int}/evaluations"
    tags = ["evaluations"]

    @post("/", operation_id="createModelEvaluation", status_code=201, sync_to_thread=True)
    def create(
        self, model_id: Id, data: JSONBody[EvaluationCreate], db: DB, user: Caller, config: Settings
    ) -> EvaluationRead:
        """Evaluate the model (its weights, or one export) on a frozen split; runs as a worker job."""
        return service.create_evaluation(db, config, model_id, data, user)

    @get("/", operation_id="listModelEvaluations", sync_to_thread=True)
    def list_evaluations(self, model_id: Id, db: DB, user: Caller) -> list[EvaluationRead]:
        return service.list_evaluations(db, model_id, user)


class EvaluationsController(Controller):
    path = "/evaluations"
    tags = ["evaluations"]

    @get("/latest", operation_id="listLatestEvaluations", sync_to_thread=True)
    def latest(self, db: DB, user: Caller) -> list[EvaluationBrief]:
        """The newest evaluation of every model the caller may see."""
        return service.latest_evaluations(db, user)

    @get("/compare", operation_id="compareEvaluations", sync_to_thread=True)
    def compare(
        self,
        db: DB,
        user: Caller,
        a: Id,
        b: Id,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> CompareRead:
        """Two models' evaluations on the same images: figures side by side and the images where they differ."""
        return service.compare(db, a, b, user, limit)

    @get("/{evaluation_id:int}", operation_id="getEvaluation", sync_to_thread=True)
    def get_evaluation(self, evaluation_id: Id, db: DB, user: Caller) -> EvaluationRead:
        return service.get_evaluation(db, evaluation_id, user)

    @get("/{evaluation_id:int}/images", operation_id="listEvaluationImages", sync_to_thread=True)
    def images(
        self,
        evaluation_id: Id,
        db: DB,
        user: Caller,
        which: Annotated[ImageFilter, QueryParameter()] = "errors",
        after: Annotated[int, QueryParameter(ge=-1, le=2**31)] = -1,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> EvaluationImagePage:
        """The evaluated images in split order; `which` keeps those with errors of a kind (default: any)."""
        return service.evaluation_images(db, evaluation_id, user, which=which, after=after, limit=limit)

    @post(
        "/{evaluation_id:int}/cancel", operation_id="cancelEvaluation", status_code=200, sync_to_thread=True
    )
    def cancel(self, evaluation_id: Id, db: DB, user: Caller) -> EvaluationRead:
        return service.cancel_evaluation(db, evaluation_id, user)
