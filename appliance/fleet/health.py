"""A rollout's health check on one box: the model loads and runs here, every camera that runs the deployed model
serves it, and its NG rate over the soak stays within the margin of the previous model's."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from appliance.camera.publish import STATUS_STALE_S, MalformedStatus, camera_dir, read_frame, read_status
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database
from appliance.fleet.contracts import RolloutHealth
from appliance.models.loading import load_detector_for_model
from appliance.models.registry import model_row
from appliance.stations.cameras import enabled_cameras

logger = logging.getLogger(__name__)

BEFORE_EVENTS = (
    1000  # the previous model's NG rate: over its latest events before the swap, at most this many
)


def try_model(db: Database, config: Config, model_id: int, health: RolloutHealth) -> bool:
    """Load the model the way the cameras will and run it once on a live frame (else a grey image)."""
    started = time.perf_counter()
    try:
        detector = load_detector_for_model(config, model_row(db, model_id))
    except Exception as exc:  # any failure to load is the answer
        health.model_loads = False
        health.reason = f"the model does not load here: {str(exc)[:300]}"
        return False
    try:
        image = _a_live_frame(db, config)
        detector.detect(image)
        health.inference_ms = round((time.perf_counter() - started) * 1000, 1)
    except Exception as exc:
        health.model_loads = True
        health.reason = f"the model loads but inference fails: {str(exc)[:300]}"
        return False
    finally:
        close = getattr(detector, "close", None)
        if close is not None:
            close()
    health.model_loads = True
    return True


def model_classes(db: Database, model_id: int) -> list[str]:
    return class_names(model_row(db, model_id)["classes"])


def _a_live_frame(db: Database, config: Config) -> np.ndarray:
    import cv2

    for camera_id in enabled_cameras(db):
        frame = read_frame(camera_dir(config.runtime_path, camera_id))
        if frame is not None:
            image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image is not None:
                return image
    return np.full((480, 640, 3), 114, np.uint8)


def deployed_cameras(db: Database) -> dict[int, str]:
    """The enabled cameras that run the deployed model (not one of their own): id -> name."""
    return {
        cid: name
        for cid, (name, settings, *_rest) in enabled_cameras(db).items()
        if settings.model_id is None
    }


@dataclass
class Serving:
    done: bool  # every such camera serves the model
    cameras: dict[str, str]  # camera id -> what it does now


def cameras_serving(db: Database, config: Config, model_id: int) -> Serving:
    """Whether every camera that runs the deployed model now runs `model_id` (a box without such cameras: yes)."""
    now = time.time()
    cameras: dict[str, str] = {}
    done = True
    for camera_id, name in deployed_cameras(db).items():
        try:
            status = read_status(camera_dir(config.runtime_path, camera_id))
        except MalformedStatus:
            status = None
        if status is None or now - status.updated_at > STATUS_STALE_S:
            cameras[str(camera_id)] = f"{name}: no status from the camera process"
            done = False
        elif status.state != "running":
            cameras[str(camera_id)] = f"{name}: {status.state} ({status.error or status.model_note})"[:200]
            done = False
        elif status.model_id != model_id:
            cameras[str(camera_id)] = f"{name}: serving model {status.model_id} ({status.model_note})"[:200]
            done = False
        else:
            cameras[str(camera_id)] = f"{name}: serving model {model_id}"
    return Serving(done, cameras)


def ng_rate_before(db: Database, model_id: int | None, until: float) -> tuple[int, float | None]:
    """(events, NG rate) of the previous model's latest events before the swap, on the deployed model's cameras."""
    if model_id is None:
        return 0, None
    cameras = list(deployed_cameras(db))
    if not cameras:
        return 0, None
    marks = ",".join("?" * len(cameras))
    rows = db.execute(
        f"""SELECT COUNT(*), SUM(verdict = 'ng') FROM (
              SELECT verdict FROM inspection_events
              WHERE model_id = ? AND ts < ? AND camera_id IN ({marks}) ORDER BY ts DESC LIMIT ?)""",
        [model_id, until, *cameras, BEFORE_EVENTS],
    ).fetchone()
    total = int(rows[0] or 0)
    return total, (int(rows[1] or 0) / total if total else None)


def ng_rate_after(db: Database, model_id: int, since: float) -> tuple[int, float | None]:
    cameras = list(deployed_cameras(db))
    if not cameras:
        return 0, None
    marks = ",".join("?" * len(cameras))
    rows = db.execute(
        f"""SELECT COUNT(*), SUM(verdict = 'ng') FROM inspection_events
            WHERE model_id = ? AND ts >= ? AND camera_id IN ({marks})""",
        [model_id, since, *cameras],
    ).fetchone()
    total = int(rows[0] or 0)
    return total, (int(rows[1] or 0) / total if total else None)


def judge_soak(
    db: Database,
    health: RolloutHealth,
    *,
    model_id: int,
    previous_model_id: int | None,
    deployed_at: float,
    serving_at: float,
    margin: float,
    min_events: int,
) -> bool:
    """Fill the NG rates in `health`; False (with the reason) when they differ by more than the margin."""
    health.events_before, health.ng_rate_before = ng_rate_before(db, previous_model_id, deployed_at)
    health.events_after, health.ng_rate_after = ng_rate_after(db, model_id, serving_at)
    if health.ng_rate_before is None or health.ng_rate_after is None:
        health.reason = "NG rates not compared: " + (
            "no previous model" if previous_model_id is None else "no inspections on one side"
        )
        return True
    if min(health.events_before, health.events_after) < min_events:
        health.reason = (
            f"NG rates not compared: {health.events_before} inspections before, {health.events_after} after "
            f"(at least {min_events} each are needed)"
        )
        return True
    difference = abs(health.ng_rate_after - health.ng_rate_before)
    if difference > margin:
        health.reason = (
            f"NG rate {health.ng_rate_after:.1%} over {health.events_after} inspections differs from the previous "
            f"model's {health.ng_rate_before:.1%} ({health.events_before}) by {difference:.1%}, more than the "
            f"{margin:.1%} margin"
        )
        return False
    health.reason = ""
    return True
