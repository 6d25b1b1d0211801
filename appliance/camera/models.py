"""Models of the camera process: each (model, precision, engine pin) loaded once and shared by the cameras
that use it, through one runner (camera/batching.py) that serves their frames in turn, several per call where
the model takes batches and a batch pays.

Loading happens on a background thread; a camera keeps its previous model (or runs without one) until the new
one is ready, then switches between two frames.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.camera.batching import BatchPolicy, BatchRunner, TriggerWaits, batch_policy
from appliance.config import Config
from appliance.db import Database, open_database
from appliance.models.loading import (
    deployed_model,
    describe_run,
    load_detector_for_model,
    loadable_artifacts,
    model_version,
)

logger = logging.getLogger(__name__)

RETRY_S = 30.0
# What the loader thread hands the pool: key, detector, row, error (or None) and the batching policy.
_Loaded = tuple[tuple[Any, ...], Any, dict[str, Any], str | None, BatchPolicy | None]


@dataclass
class SharedModel:
    key: tuple[Any, ...]
    row: dict[str, Any]
    detector: Any
    runner: BatchRunner

    @property
    def model_id(self) -> int:
        return int(self.row["id"])

    @property
    def name(self) -> str | None:
        return self.row.get("name")

    @functools.cached_property
    def version(self) -> str:
        """What exactly runs, for the events it judges: the export's format, precision and input size, the
        engine, and when the export was built (a rebuilt or re-exported file is another version)."""
        return model_version(self.detector)

    @property
    def runs_on(self) -> str:
        """engine, device and precision, e.g. "openvino CPU fp32"."""
        return describe_run(self.detector)


def model_key(config: Config, row: dict[str, Any], precision: str, engine: str = "auto") -> tuple[Any, ...]:
    """Identity of what would be loaded: the row, the precision and engine asked for (the camera's pin and the
    model's), its exports and their mtimes."""
    asked = (row["id"], precision, engine, row.get("engine") or "auto")
    try:
        exports = tuple(
            sorted((a["file"], a["path"].stat().st_mtime_ns) for a in loadable_artifacts(config, row["id"]))
        )
    except OSError as exc:
        return (*asked, f"unreadable: {exc}")
    return (*asked, exports)


def model_row(db: Database, model_id: int | None) -> dict[str, Any] | None:
    if model_id is None:
        return deployed_model(db)
    return next(db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)


class ModelPool:
    """Owned by the camera process's main thread (`refresh`); camera loops only call `get`."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.loaded: dict[tuple[Any, ...], SharedModel] = {}
        self.wanted: dict[int, tuple[Any, ...] | None] = {}  # camera id -> the key it should run
        self.serving: dict[int, tuple[Any, ...] | None] = {}  # camera id -> the key it runs now
        self.notes: dict[int, str] = {}
        self._failed: dict[tuple[Any, ...], tuple[float, str]] = {}
        self._loading: tuple[tuple[Any, ...], threading.Thread] | None = None
        self._done: list[_Loaded] = []
        self._lock = threading.Lock()
        self.trigger_waits = (
            TriggerWaits()
        )  # routine frames of every model wait for a trigger's (batching.py)

    def get(self, camera_id: int) -> tuple[SharedModel | None, str]:
        """The camera's model when loaded, and a note for its status."""
        key = self.serving.get(camera_id)
        model = self.loaded.get(key) if key is not None else None
        if model is not None:
            plan = getattr(model.detector, "plan", None)
            note = f"; {plan.choice.note}" if plan is not None and plan.choice.note else ""
            return (
                model,
                f"model {model.model_id} ({model.runs_on}), batches {model.runner.policy.note}{note}",
            )
        return None, self.notes.get(camera_id, "no model deployed")

    def refresh(self, cameras: Mapping[int, tuple[int | None, str, str]]) -> None:
        """cameras: {id: (model_id or None for the deployed one, precision, engine pin)}; loads and frees as
        needed, and tells each runner how many cameras share it."""
        with self._lock:
            done, self._done = self._done, []
        for key, detector, loaded_row, error, policy in done:
            if error is None:
                self.loaded[key] = SharedModel(
                    key, loaded_row, detector, BatchRunner(detector, policy, self.trigger_waits)
                )
                logger.info("camera process loaded model %s (%s)", loaded_row["id"], key[1])
            else:
                self._failed[key] = (time.monotonic(), error)
        rows: dict[int | None, dict[str, Any] | None] = {}
        wanted: dict[int, tuple[Any, ...] | None] = {}
        for camera_id, (model_id, precision, engine) in cameras.items():
            if model_id not in rows:
                rows[model_id] = model_row(self.db, model_id)
            row = rows[model_id]
            if row is None:
                wanted[camera_id] = None
                self.notes[camera_id] = (
                    "no model deployed" if model_id is None else f"model {model_id} does not exist"
                )
                continue
            key = model_key(self.config, row, precision, engine)
            wanted[camera_id] = key
            if key in self.loaded:
                continue
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < RETRY_S:
                self.notes[camera_id] = f"model {row['id']} could not be loaded: {failed[1]}"
                continue
            self.notes[camera_id] = f"loading model {row['id']}"
            self._start_load(key, row, precision, engine)
        # A camera keeps the model it runs until the one it should run is loaded (no gap in detections);
        # with no model to run at all (none deployed, deleted) it stops at once.
        serving: dict[int, tuple[Any, ...] | None] = {}
        for camera_id, wanted_key in wanted.items():
            previous = self.serving.get(camera_id)
            keep = wanted_key is not None and wanted_key not in self.loaded and previous in self.loaded
            serving[camera_id] = previous if keep else wanted_key
        self.wanted, self.serving = wanted, serving
        sharing: dict[tuple[Any, ...], int] = {}
        for served in serving.values():
            if served is not None:
                sharing[served] = sharing.get(served, 0) + 1
        for key, model in self.loaded.items():
            model.runner.cameras = max(1, sharing.get(key, 0))
        in_use = {key for key in (*wanted.values(), *serving.values()) if key is not None}
        for key in [k for k in self.loaded if k not in in_use]:
            model = self.loaded.pop(key)
            with model.runner.exclusive():  # no camera is inside detect() when it closes
                model.detector.close()

    def _start_load(self, key: tuple[Any, ...], row: dict[str, Any], precision: str, engine: str) -> None:
        if self._loading is not None and self._loading[1].is_alive():
            return
        thread = threading.Thread(
            target=self._load, args=(key, row, precision, engine), name="camera-model-loader", daemon=True
        )
        self._loading = (key, thread)
        thread.start()

    def _load(self, key: tuple[Any, ...], row: dict[str, Any], precision: str, engine: str) -> None:
        db = open_database(self.config.db_path)
        try:
            detector = load_detector_for_model(
                self.config,
                db,
                row,
                precision=None if precision == "auto" else precision,
                camera_pin=engine,
                max_batch=self.config.batch_max,
            )
            # Measured here, before any camera uses it: whether batches pay on this engine and device.
            policy = batch_policy(
                detector, batch_max=self.config.batch_max, min_gain=self.config.batch_min_gain
            )
            logger.info("model %s (%s): batching %s", row["id"], describe_run(detector), policy.note)
            result: _Loaded = (key, detector, row, None, policy)
        except Exception as exc:  # a broken export must not stop the cameras
            logger.exception("camera process could not load model %s", row.get("id"))
            result = (key, None, row, str(exc)[:500], None)
        finally:
            db.conn.close()
        with self._lock:
            self._done.append(result)

    def close(self) -> None:
        for model in self.loaded.values():
            model.detector.close()
        self.loaded.clear()
