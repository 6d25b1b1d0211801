"""HTTP routes of shadow mode: a camera's candidate, promote and its undo, the disagreements kept."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from appliance.dependencies import DB, Caller, Id, OptionalId, Settings
from appliance.shadow import service
from appliance.shadow.schemas import (
    ShadowCapture,
    ShadowEventPage,
    ShadowEventRead,
    ShadowOverview,
    ShadowStart,
)
from appliance.stations.schemas import CaptureResult


class CameraShadowController(Controller):
    path = "/cameras/{camera_id:int}/shadow"
    tags = ["shadow"]

    @get("/", operation_id="getCameraShadow", sync_to_thread=True)
    def get_shadow(self, camera_id: Id, db: DB, user: Caller, config: Settings) -> ShadowOverview:
        """The camera's model, its candidate with the live agreement figures, and its last promotion."""
        return service.overview(db, config, camera_id, user)

    @put("/", operation_id="startCameraShadow", sync_to_thread=True)
    def start(
        self, camera_id: Id, data: JSONBody[ShadowStart], db: DB, user: Caller, config: Settings
    ) -> ShadowOverview:
        """Run a candidate model beside the camera's on the same frames, on spare time only."""
        return service.start_shadow(db, config, camera_id, data, user)

    @delete("/", operation_id="stopCameraShadow", status_code=204, sync_to_thread=True)
    def stop(self, camera_id: Id, db: DB, user: Caller) -> None:
        service.stop_shadow(db, camera_id, user)

    @post("/promote", operation_id="promoteCameraShadow", status_code=200, sync_to_thread=True)
    def promote(self, camera_id: Id, db: DB, user: Caller, config: Settings) -> ShadowOverview:
        """The candidate becomes the camera's model (after `window` shadowed inspections; admins)."""
        return service.promote(db, config, camera_id, user)

    @post(
        "/promotions/{promotion_id:int}/undo",
        operation_id="undoShadowPromotion",
        status_code=200,
        sync_to_thread=True,
    )
    def undo(self, camera_id: Id, promotion_id: Id, db: DB, user: Caller, config: Settings) -> ShadowOverview:
        """The camera's previous model back and the promoted one in the shadow again (admins)."""
        return service.undo_promotion(db, config, camera_id, promotion_id, user)

    @get("/events", operation_id="listShadowEvents", sync_to_thread=True)
    def events(
        self,
        camera_id: Id,
        db: DB,
        user: Caller,
        before_id: OptionalId = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> ShadowEventPage:
        """Inspections where the candidate's verdict differed, newest first."""
        return service.list_events(db, camera_id, before_id, limit)


class ShadowEventsController(Controller):
    path = "/shadow-events"
    tags = ["shadow"]

    @get("/{event_id:int}", operation_id="getShadowEvent", sync_to_thread=True)
    def get_event(self, event_id: Id, db: DB, user: Caller) -> ShadowEventRead:
        return service.get_event(db, event_id)

    @get(
        "/{event_id:int}/snapshot",
        operation_id="getShadowEventSnapshot",
        sync_to_thread=True,
        media_type="image/jpeg",
    )
    def snapshot(self, event_id: Id, db: DB, user: Caller, config: Settings) -> Response[bytes]:
        return Response(
            service.snapshot_bytes(db, config, event_id),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=86400"},
        )

    @post(
        "/{event_id:int}/dataset",
        operation_id="sendShadowEventToDataset",
        status_code=201,
        sync_to_thread=True,
    )
    def to_dataset(
        self,
        event_id: Id,
        data: JSONBody[ShadowCapture],
        db: DB,
        user: Caller,
        config: Settings,
        state: State,
    ) -> CaptureResult:
        """The frame into a dataset with either model's boxes as pre-labels to review."""
        return service.send_to_dataset(db, state.image_store, config, event_id, data, user)
