"""What the box announces on the line's broker (the retained status): version, cameras and their states,
deployed model, disk."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from appliance import __version__
from appliance.db import Database
from appliance.outputs.camera_live import CameraLive
from appliance.outputs.contracts import DiskSummary, ModelSummary, StatusMessage

MB = 1024 * 1024


def online_status(db: Database, box_id: str, data_path: Path, cameras: list[CameraLive]) -> StatusMessage:
    """`cameras`: every catalog camera as the outputs process last saw it (camera_live.CameraStates)."""
    model = db.execute("SELECT id, name FROM models WHERE deployed = 1 LIMIT 1").fetchone()
    usage = shutil.disk_usage(data_path)
    now = time.time()
    return StatusMessage(
        box_id=box_id,
        state="online",
        ts=now,
        version=__version__,
        cameras=[camera.summary(now) for camera in sorted(cameras, key=lambda c: c.camera_id)],
        deployed_model=ModelSummary(id=model[0], name=model[1]) if model else None,
        disk=DiskSummary(free_mb=usage.free // MB, total_mb=usage.total // MB),
    )


def offline_status(box_id: str) -> StatusMessage:
    return StatusMessage(box_id=box_id, state="offline")
