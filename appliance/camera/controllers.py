"""HTTP and WebSocket routes of the live camera; the camera itself runs in its own process (appliance camera)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import msgspec
from litestar import Controller, WebSocket, get, post, put, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from litestar.params import JSONBody
from litestar.response import Stream

from appliance.camera import service
from appliance.camera.hub import BOUNDARY, FrameHub, mjpeg_stream
from appliance.camera.schemas import (
    CameraSettings,
    CameraSettingsRead,
    CameraStatus,
    CaptureRequest,
    CaptureResult,
)
from appliance.config import Config
from appliance.dependencies import DB, Caller, Settings

logger = logging.getLogger(__name__)

WS_STATUS_EVERY_S = 1.0


def frame_hub(state: State) -> FrameHub:
    """One reader per web process, created on first use inside the event loop."""
    hub = state.get("camera_hub")
    if hub is None:
        hub = FrameHub(state.config.runtime_path)
        state.camera_hub = hub
    return hub


class CameraController(Controller):
    path = "/camera"
    tags = ["camera"]

    @get("/", operation_id="getCameraSettings", sync_to_thread=True)
    def get_settings(self, db: DB, user: Caller) -> CameraSettingsRead:
        return service.get_settings(db)

    @put("/", operation_id="putCameraSettings", sync_to_thread=True)
    def put_settings(self, data: JSONBody[CameraSettings], db: DB, user: Caller) -> CameraSettingsRead:
        return service.put_settings(db, data, user)

    @post("/start", operation_id="startCamera", sync_to_thread=True, status_code=200)
    def start(self, db: DB, user: Caller) -> CameraSettingsRead:
        return service.set_enabled(db, True, user)

    @post("/stop", operation_id="stopCamera", sync_to_thread=True, status_code=200)
    def stop(self, db: DB, user: Caller) -> CameraSettingsRead:
        return service.set_enabled(db, False, user)

    @get("/status", operation_id="getCameraStatus", sync_to_thread=True)
    def status(self, config: Settings, user: Caller) -> CameraStatus:
        return service.camera_status(config.runtime_path)

    @post("/capture", operation_id="captureCameraFrame", sync_to_thread=True, status_code=201)
    def capture(
        self, data: JSONBody[CaptureRequest], db: DB, user: Caller, config: Settings, state: State
    ) -> CaptureResult:
        return service.capture(db, state.image_store, config, data.dataset_id, user)

    @get("/stream", operation_id="streamCamera", media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
    async def stream(self, state: State, user: Caller) -> Stream:
        """MJPEG of the latest published frames; any number of viewers, a slow one skips frames."""
        return Stream(
            mjpeg_stream(frame_hub(state)),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @websocket("/ws", name="cameraSocket")
    async def socket(self, socket: WebSocket[Any, Any, Any]) -> None:
        """Per frame: {type: "frame", seq, width, height, detections, timings, ...}; once a second: status."""
        state = socket.app.state
        config: Config = state.config
        await socket.accept()
        hub = frame_hub(state)
        sender = asyncio.create_task(self._send_frames(socket, hub, config))
        try:
            while True:  # the client sends nothing we need; this notices when it goes away
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    @staticmethod
    async def _send_frames(socket: WebSocket[Any, Any, Any], hub: FrameHub, config: Config) -> None:
        loop = asyncio.get_running_loop()
        next_status = 0.0
        version = 0
        try:
            async with hub.viewer():
                while True:
                    if loop.time() >= next_status:
                        status = await asyncio.to_thread(service.camera_status, config.runtime_path)
                        payload = msgspec.to_builtins(status)
                        await socket.send_text(json.dumps({"type": "status", **payload}))
                        next_status = loop.time() + WS_STATUS_EVERY_S
                    version, frame = await hub.next_frame(version, timeout=WS_STATUS_EVERY_S)
                    if frame is not None:
                        await socket.send_text('{"type":"frame",' + frame.meta_json.decode()[1:])
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
