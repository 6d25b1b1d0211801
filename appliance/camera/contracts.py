"""The files the camera process hands to the web process, as typed records (frame.json; status.json is
stations.schemas.CameraStatus)."""

from __future__ import annotations

import msgspec

from appliance.inference.pipeline import Detection

# One box of the published frame, in the frame's pixels: the pipeline's own record (msgspec encodes
# dataclasses), so the camera publishes what the detector returned without copying it.
FrameDetection = Detection


class FrameMeta(msgspec.Struct, kw_only=True):
    """frame.json: the latest frame's sequence, detections, verdict and timings; crc32/size pair it with
    frame.jpg."""

    seq: int
    camera_id: int = 0
    source_seq: int = 0
    ts: float = 0.0
    width: int = 0
    height: int = 0
    detections: list[FrameDetection] = msgspec.field(default_factory=list)
    verdict: str | None = None  # this frame's own verdict under the camera's rules (None: no model)
    failing_rules: list[str] = msgspec.field(default_factory=list)
    timings: dict[str, float] = msgspec.field(default_factory=dict)
    model_id: int | None = None
    fps: float = 0.0
    dropped: int = 0
    crc32: int = 0
    size: int = 0
