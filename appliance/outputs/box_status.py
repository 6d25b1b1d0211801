"""What the box announces on the line's broker (the retained status): version, cameras, deployed model, disk."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from appliance import __version__
from appliance.db import Database
from appliance.outputs.contracts import CameraSummary, DiskSummary, ModelSummary, StatusMessage

MB = 1024 * 1024


def _mode(settings_json: str) -> str:
    try:
        return str(json.loads(settings_json).get("mode") or "continuous")
    except (ValueError, AttributeError):
        return "continuous"


def online_status(db: Database, box_id: str, data_path: Path) -> StatusMessage:
    cameras = [
        CameraSummary(id=row[0], name=row[1], enabled=bool(row[2]), mode=_mode(row[3]))
        for row in db.execute("SELECT id, name, enabled, settings FROM cameras ORDER BY id").fetchall()
    ]
    model = db.execute("SELECT id, name FROM models WHERE deployed = 1 LIMIT 1").fetchone()
    usage = shutil.disk_usage(data_path)
    return StatusMessage(
        box_id=box_id,
        state="online",
        ts=time.time(),
        version=__version__,
        cameras=cameras,
        deployed_model=ModelSummary(id=model[0], name=model[1]) if model else None,
        disk=DiskSummary(free_mb=usage.free // MB, total_mb=usage.total // MB),
    )


def offline_status(box_id: str) -> StatusMessage:
    return StatusMessage(box_id=box_id, state="offline")
