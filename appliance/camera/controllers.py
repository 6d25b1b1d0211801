"""HTTP and WebSocket routes of the cameras resource; the cameras themselves run in `appliance camera`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import msgspec
from litestar import Controller, Response, WebSocket, delete, get, post, put, websocket
from litestar.datastructures import ResponseHeader, State
from litestar.exceptions import WebSocketDisconnect
from litestar.params import JSONBody
from litestar.response import Stream

from appliance.caller import CurrentUser, require_admin, require_writer
from appliance.camera import genicam_service, service
from appliance.camera.hub import BOUNDARY, FrameHub, mjpeg_stream
from appliance.camera.publish import FRAME_STALE_S, frame_age_s, is_stale
from appliance.config import Config
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.errors import TooManyRequests
from appliance.stations import cameras, triggers
from appliance.stations.genicam import GenicamDiscovery
from appliance.stations.schemas import (
    CameraRead,
    CameraSettings,
    CameraStatus,
    CameraWrite,
    CaptureRequest,
    CaptureResult,
    TriggerAccepted,
    TriggerRead,
)
from appliance.streams import stream_slots

logger = logging.getLogger(__name__)

WS_STATUS_EVERY_S = 1.0
FRAME_HEADERS = [
    ResponseHeader(
        name="X-Frame-Captured-At", documentation_only=True,
        description="unix seconds (box clock) at which the frame arrived from the camera",
    ),
    ResponseHeader(
        name="X-Frame-Age-Ms", documentation_only=True, description="milliseconds since then, on the box's clock"
    ),
    ResponseHeader(
        name="X-Frame-Stale", documentation_only=True,
        description=f"true when the frame is older than {FRAME_STALE_S:.0f} s (or three frame intervals of a "
        "slower camera): no live picture, the source is down or the camera is not keeping up",
    ),
]  # fmt: skip


def frame_hub(state: State, camera_id: int) -> FrameHub:
    """One reader per camera and web process, created on first use inside the event loop."""
    hubs: dict[int, FrameHub] = state.setdefault("camera_hubs", {})
    hub = hubs.get(camera_id)
    if hub is None:
        hub = hubs[camera_id] = FrameHub(service.runtime_folder(state.config, camera_id))
    return hub


class CamerasController(Controller):
    path = "/cameras"
    tags = ["cameras"]

    @get("/", operation_id="listCameras", sync_to_thread=True)
    def list_cameras(self, db: DB, user: Caller) -> list[CameraRead]:
        return cameras.list_cameras(db, user)

    @post("/", operation_id="createCamera", sync_to_thread=True, status_code=201)
    def create(self, data: JSONBody[CameraWrite], db: DB, user: Caller, config: Settings) -> CameraRead:
        def check(settings: CameraSettings) -> None:
            genicam_service.check_against_camera(config, None, settings)

        return cameras.create_camera(db, data, user, check)

    @get("/discover", operation_id="discoverCameras", sync_to_thread=True)
    def discover(self, user: Caller) -> GenicamDiscovery:
        """The GigE Vision / USB3 Vision cameras Aravis finds on the box's interfaces (about a second)."""
        require_admin(user)
        return genicam_service.discovery()

    @get("/status", operation_id="listCameraStatuses", sync_to_thread=True)
    def statuses(self, db: DB, user: Caller, config: Settings) -> list[CameraStatus]:
        ids = [row[0] for row in db.execute("SELECT id FROM cameras ORDER BY id").fetchall()]
        return [service.camera_status(db, config, camera_id, user) for camera_id in ids]

    @get("/{camera_id:int}", operation_id="getCamera", sync_to_thread=True)
    def get_camera(self, camera_id: Id, db: DB, user: Caller) -> CameraRead:
        return cameras.get_camera(db, camera_id, user)

    @put("/{camera_id:int}", operation_id="putCamera", sync_to_thread=True)
    def put_camera(
        self, camera_id: Id, data: JSONBody[CameraWrite], db: DB, user: Caller, config: Settings
    ) -> CameraRead:
        def check(settings: CameraSettings) -> None:
            genicam_service.check_against_camera(config, camera_id, settings)

        return cameras.replace_camera(db, camera_id, data, user, check)

    @delete("/{camera_id:int}", operation_id="deleteCamera", sync_to_thread=True, status_code=204)
    def delete_camera(self, camera_id: Id, db: DB, user: Caller) -> None:
        cameras.delete_camera(db, camera_id, user)

    @post("/{camera_id:int}/start", operation_id="startCamera", sync_to_thread=True, status_code=200)
    def start(self, camera_id: Id, db: DB, user: Caller) -> CameraRead:
        return cameras.set_enabled(db, camera_id, True, user)

    @post("/{camera_id:int}/stop", operation_id="stopCamera", sync_to_thread=True, status_code=200)
    def stop(self, camera_id: Id, db: DB, user: Caller) -> CameraRead:
        return cameras.set_enabled(db, camera_id, False, user)

    @post("/{camera_id:int}/trigger", operation_id="triggerCamera", sync_to_thread=True, status_code=202)
    def trigger(self, camera_id: Id, db: DB, user: Caller) -> TriggerAccepted:
        """Inspect the camera's next frame (one that arrives after this request); the event carries the id."""
        require_writer(user)
        trigger_id = triggers.request_trigger(db, camera_id, "http")
        return TriggerAccepted(trigger_id=trigger_id, camera_id=camera_id)

    @get("/{camera_id:int}/triggers/{trigger_id:int}", operation_id="getCameraTrigger", sync_to_thread=True)
    def get_trigger(self, camera_id: Id, trigger_id: Id, db: DB, user: Caller) -> TriggerRead:
        return triggers.get_trigger(db, camera_id, trigger_id)

    @get("/{camera_id:int}/status", operation_id="getCameraStatus", sync_to_thread=True)
    def status(self, camera_id: Id, db: DB, user: Caller, config: Settings) -> CameraStatus:
        return service.camera_status(db, config, camera_id, user)

    @get(
        "/{camera_id:int}/frame",
        operation_id="getCameraFrame",
        sync_to_thread=True,
        media_type="image/jpeg",
        response_headers=FRAME_HEADERS,
    )
    def frame(self, camera_id: Id, db: DB, user: Caller, config: Settings) -> Response[bytes]:
        """The latest frame as one JPEG (the Live grid refreshes tiles with it: one stream per page is enough).
        During an outage it is the last frame before it: the headers say when it arrived and that it is stale."""
        frame = service.latest_frame(db, config, camera_id)
        now = time.time()
        return Response(
            frame.jpeg,
            media_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Captured-At": f"{frame.meta.ts:.3f}",
                "X-Frame-Age-Ms": str(round(frame_age_s(frame.meta, now) * 1000)),
                "X-Frame-Stale": "true" if is_stale(frame.meta, now) else "false",
            },
        )

    @post("/{camera_id:int}/capture", operation_id="captureCameraFrame", sync_to_thread=True, status_code=201)
    def capture(
        self,
        camera_id: Id,
        data: JSONBody[CaptureRequest],
        db: DB,
        user: Caller,
        config: Settings,
        state: State,
    ) -> CaptureResult:
        return service.capture(db, state.image_store, config, camera_id, data.dataset_id, user)

    @get(
        "/{camera_id:int}/stream",
        operation_id="streamCamera",
        sync_to_thread=True,
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    )
    def stream(self, camera_id: Id, db: DB, state: State, user: Caller) -> Stream:
        """MJPEG of the camera's latest frames; any number of viewers, a slow one skips frames."""
        cameras.camera_row(db, camera_id)
        slots = stream_slots(state)
        return Stream(
            slots.hold_while(slots.take(user.id), mjpeg_stream(frame_hub(state, camera_id))),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @websocket("/{camera_id:int}/ws", name="cameraSocket")
    async def socket(self, camera_id: Id, socket: WebSocket[Any, Any, Any]) -> None:
        """Per frame: {type: "frame", seq, detections, verdict, timings, ...}; once a second: the status."""
        state = socket.app.state
        user: CurrentUser = socket.user
        with state.pool.connection() as db:
            exists = db.execute("SELECT 1 FROM cameras WHERE id = ?", [camera_id]).fetchone()
        if not exists:
            await socket.close(code=4404, reason=f"camera {camera_id} not found")
            return
        try:
            release = stream_slots(state).take(user.id)
        except TooManyRequests as exc:
            await socket.close(code=4429, reason=exc.detail[:120])
            return
        await socket.accept()
        hub = frame_hub(state, camera_id)
        sender = asyncio.create_task(self._send_frames(socket, hub, state.config, state, camera_id, user))
        try:
            while True:  # the client sends nothing we need; this notices when it goes away
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            release()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    @staticmethod
    async def _send_frames(
        socket: WebSocket[Any, Any, Any],
        hub: FrameHub,
        config: Config,
        state: State,
        camera_id: int,
        user: CurrentUser,
    ) -> None:
        loop = asyncio.get_running_loop()
        next_status = 0.0
        version = 0

        def read_status() -> CameraStatus:
            with state.pool.connection() as db:
                return service.camera_status(db, config, camera_id, user)

        try:
            async with hub.viewer():
                while True:
                    if loop.time() >= next_status:
                        status = await asyncio.to_thread(read_status)
                        await socket.send_text(json.dumps({"type": "status", **msgspec.to_builtins(status)}))
                        next_status = loop.time() + WS_STATUS_EVERY_S
                        live = status.state not in ("stopped", "offline")
                    version, frame = await hub.next_frame(version, timeout=WS_STATUS_EVERY_S)
                    if frame is not None and live:
                        await socket.send_text('{"type":"frame",' + frame.meta_json.decode()[1:])
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
