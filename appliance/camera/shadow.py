"""Shadow mode in the camera process: a candidate model judges the frames a camera inspects, beside the
camera's own model, and never before it.

The camera's loop publishes its verdict first and only then offers the frame (`consider`: a reference into a
one-frame slot, never a wait). A thread of this module takes the slot when the candidate is free and sends
the frame to the candidate's own process (appliance.camera.shadow_child, at the lowest CPU priority), so the
candidate runs on time the camera leaves idle; while any camera judges a frame its process is paused
(appliance.camera.spare_time). A frame offered while the candidate is still busy replaces
the one waiting, which is counted as skipped. Which frames are offered: in continuous mode every inspected
frame; in triggered and interval modes the frames that made an inspection event.

Each shadowed inspection is judged by the camera's own rules and zones on the candidate's boxes; the two
verdicts agree or not, and the boxes are compared one to one. The figures over the last `window`
inspections go to <runtime>/cameras/<id>/shadow.json; a disagreement is kept in the catalog with both
results and the frame (appliance.shadow.store), written by this thread, never by the camera's loop.
"""

from __future__ import annotations

import collections
import logging
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from appliance.camera.models import model_row
from appliance.camera.publish import camera_dir, replace_file
from appliance.camera.spare_time import SpareTime
from appliance.camera.station import boxes_of
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database, open_database
from appliance.inference.pipeline import Detection
from appliance.models.loading import select_artifact
from appliance.shadow.compare import box_difference
from appliance.shadow.contracts import SHADOW_STATUS, Disagreement, ModelResult, ShadowRow, ShadowStatus
from appliance.shadow.store import active_shadows, record_disagreement, sweep_orphans
from appliance.stations.contracts import InspectionEvent
from appliance.stations.rules import Evaluation, evaluate
from appliance.stations.schemas import CameraSettings

if TYPE_CHECKING:
    from appliance.camera.station import CameraLoop

logger = logging.getLogger(__name__)

STATUS_EVERY_S = 0.5
RETRY_S = 30.0  # a candidate whose process failed is started again after this long
MB = 1024 * 1024


@dataclass
class Offer:
    """One inspected frame and what the camera's model made of it."""

    image: np.ndarray
    jpeg: bytes
    ts: float
    mode: str
    trigger_id: int | None
    settings: CameraSettings
    deployed: ModelResult


class ChildGone(Exception):
    """The candidate's process ended or answered out of turn."""


class CameraShadow:
    """One camera's candidate: its process, the slot the loop offers frames into, its figures."""

    def __init__(
        self,
        config: Config,
        camera_id: int,
        row: ShadowRow,
        model: dict[str, Any],
        folder: Path,
        spare_time: SpareTime | None = None,
    ):
        self.config = config
        self.spare_time = spare_time or SpareTime()
        self.camera_id = camera_id
        self.row = row
        self.model = model
        self.folder = folder
        self.status = ShadowStatus(
            camera_id=camera_id,
            model_id=row.model_id,
            model_name=model.get("name"),
            started_at=row.started_at,
            window=row.window,
        )
        self._names = class_names(model.get("classes"))
        self._window: collections.deque[tuple[bool, bool, int, int, int]] = collections.deque(
            maxlen=row.window
        )
        self._times: collections.deque[float] = collections.deque(maxlen=200)
        self._pending: Offer | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._serial = 0
        self._seq = 0
        self._next_status = 0.0
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera_id}-shadow", daemon=True)
        self.ended_at: float | None = None  # monotonic time the thread ended on an error (retried later)

    def start(self) -> CameraShadow:
        self._thread.start()
        return self

    # --- the camera loop's side: never waits ------------------------------------------------------------

    def consider(
        self,
        image: np.ndarray,
        jpeg: bytes,
        ts: float,
        settings: CameraSettings,
        model_id: int | None,
        detections: list[Detection],
        evaluation: Evaluation,
        events: list[InspectionEvent],
    ) -> None:
        """Called by the camera loop after it published the frame's verdict."""
        if settings.mode != "continuous" and not events:
            return
        deployed = ModelResult(
            model_id=model_id,
            verdict=evaluation.verdict,
            failing_rules=list(evaluation.failing_rules),
            counts=evaluation.counts,
            detections=detections,
        )
        trigger_id = next((e.trigger_id for e in events if e.trigger_id is not None), None)
        mode = events[0].mode if events else settings.mode
        offer = Offer(image, jpeg, ts, mode, trigger_id, settings, deployed)
        with self._cond:
            self.status.offered += 1
            if self._pending is not None:
                self.status.skipped += 1
            self._pending = offer
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._end_child()
        self._thread.join(timeout)
        (self.folder / SHADOW_STATUS).unlink(missing_ok=True)

    # --- the shadow thread ----------------------------------------------------------------------------

    def _take(self) -> Offer | None:
        with self._cond:
            while self._pending is None and not self._stop.is_set():
                self._cond.wait(STATUS_EVERY_S)
                if time.monotonic() >= self._next_status:
                    break
            offer, self._pending = self._pending, None
            return offer

    def _run(self) -> None:
        db = open_database(self.config.db_path)
        try:
            sweep_orphans(db, self.config.data_path, self.camera_id)
            self._start_child()
            self.status.state = "running"
            self._publish(force=True)
            while not self._stop.is_set():
                offer = self._take()
                if offer is not None:
                    self._judge(db, offer)
                self._publish()
        except ChildGone as exc:
            if not self._stop.is_set():
                logger.warning(
                    "camera %s: the shadow of model %s stopped: %s", self.camera_id, self.row.model_id, exc
                )
                self.status.state, self.status.error = "error", str(exc)[:500]
                self._publish(force=True)
        except Exception as exc:
            logger.exception("camera %s: the shadow of model %s failed", self.camera_id, self.row.model_id)
            self.status.state, self.status.error = "error", str(exc)[:500]
            self._publish(force=True)
        finally:
            self._end_child()
            db.conn.close()
            if not self._stop.is_set():
                self.ended_at = time.monotonic()

    def _start_child(self) -> None:
        artifact = select_artifact(self.config, self.model)
        self.status.state = "loading"
        self._publish(force=True)
        self._process = subprocess.Popen(
            [
                sys.executable, "-m", "appliance.camera.shadow_child", str(artifact.path), str(artifact.info.imgsz),
                msgspec.json.encode(self._names).decode(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self.spare_time.add(self._process.pid)
        ready = self._reply()
        if ready.get("error") or not ready.get("ready"):
            raise ChildGone(f"the candidate model could not be loaded: {ready.get('error') or ready}")
        self.status.backend = ready.get("backend")
        logger.info(
            "camera %s: shadow of model %s running (%s)",
            self.camera_id,
            self.row.model_id,
            self.status.backend,
        )

    def _end_child(self) -> None:
        process = self._process
        if process is None:
            return
        self.spare_time.remove(process.pid)  # before it is reaped: its pid is never signalled after
        if process.poll() is not None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(2)
        except (OSError, subprocess.TimeoutExpired, AssertionError):
            process.kill()
            process.wait()

    def _reply(self) -> dict[str, Any]:
        """The child's next line (a hung child is killed by close(), which ends the read)."""
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self.spare_time.remove(self._process.pid)  # before poll() reaps it
            raise ChildGone(f"the candidate's process ended (exit status {self._process.poll()})")
        decoded = msgspec.json.decode(line)
        return decoded if isinstance(decoded, dict) else {}

    def _infer(self, offer: Offer) -> list[Detection]:
        process = self._process
        assert process is not None and process.stdin is not None
        image = np.ascontiguousarray(offer.image)
        self._seq += 1
        header = {
            "seq": self._seq,
            "height": image.shape[0],
            "width": image.shape[1],
            "channels": image.shape[2] if image.ndim == 3 else 1,
            "conf": offer.settings.confidence,
            "iou": offer.settings.iou,
        }
        try:
            process.stdin.write(msgspec.json.encode(header) + b"\n")
            process.stdin.write(image.data)
            process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildGone(f"the candidate's process is gone: {exc}") from None
        answer = self._reply()
        if answer.get("seq") != self._seq:
            raise ChildGone(f"the candidate answered out of turn: {answer}")
        if answer.get("error"):
            raise RuntimeError(answer["error"])
        self._times.append(float(answer.get("ms", 0.0)))
        names = self._names
        return [
            Detection(
                class_id=int(c),
                class_name=names[int(c)] if 0 <= c < len(names) else str(int(c)),
                confidence=float(s),
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
            )  # fmt: skip
            for c, s, x1, y1, x2, y2 in answer.get("detections", [])
        ]

    def _judge(self, db: Database, offer: Offer) -> None:
        detections = self._infer(offer)
        settings = offer.settings
        judged = evaluate(settings.rules, settings.zones, detections)
        candidate = ModelResult(
            model_id=self.row.model_id,
            verdict=judged.verdict,
            failing_rules=list(judged.failing_rules),
            counts=judged.counts,
            detections=detections,
        )
        difference = box_difference(offer.deployed.detections, detections)
        agree = candidate.verdict == offer.deployed.verdict
        self.status.shadowed += 1
        self.status.agreed += agree
        self._window.append(
            (agree, difference.same_boxes, len(difference.deployed_only), len(difference.candidate_only),
             len(difference.class_changed))
        )  # fmt: skip
        if not agree:
            self._keep(db, offer, candidate, difference)

    def _keep(self, db: Database, offer: Offer, candidate: ModelResult, difference: Any) -> None:
        height, width = offer.image.shape[:2]
        found = Disagreement(
            camera_id=self.camera_id, ts=offer.ts, mode=offer.mode, trigger_id=offer.trigger_id,
            deployed=_rounded(offer.deployed), candidate=_rounded(candidate), difference=difference,
            width=width, height=height,
        )  # fmt: skip
        keep_frame = offer.settings.snapshots and not self._disk_low()
        self._serial += 1
        try:
            record_disagreement(
                db, self.config.data_path, found, offer.jpeg if keep_frame else None, self._serial,
                self.config.shadow_events_max,
            )  # fmt: skip
            self.status.disagreements_kept += 1
        except Exception:
            logger.exception("camera %s: a shadow disagreement could not be stored", self.camera_id)
            self.status.disagreements_dropped += 1

    def _disk_low(self) -> bool:
        return shutil.disk_usage(self.config.data_path).free < self.config.disk_min_free_mb * MB

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_status:
            return
        self._next_status = now + STATUS_EVERY_S
        window = list(self._window)
        status = self.status
        status.window_shadowed = len(window)
        status.window_agreed = sum(1 for w in window if w[0])
        status.window_same_boxes = sum(1 for w in window if w[1])
        status.window_deployed_only = sum(w[2] for w in window)
        status.window_candidate_only = sum(w[3] for w in window)
        status.window_class_changed = sum(w[4] for w in window)
        status.candidate_ms = round(statistics.median(self._times), 2) if self._times else None
        status.updated_at = time.time()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            replace_file(self.folder / SHADOW_STATUS, msgspec.json.encode(status))
        except OSError:
            logger.warning("camera %s: could not write the shadow status", self.camera_id, exc_info=True)


def follow_shadows(
    config: Config,
    db: Database,
    shadows: dict[int, CameraShadow],
    loops: Mapping[int, CameraLoop],
    spare_time: SpareTime | None = None,
) -> dict[int, CameraShadow]:
    """Start, replace and stop candidates so that the running cameras match camera_shadows (main thread).

    A candidate whose process failed is started again after RETRY_S; a loop that was replaced (new source)
    gets the running candidate."""
    wanted = active_shadows(db)
    kept: dict[int, CameraShadow] = {}
    now = time.monotonic()
    for camera_id, shadow in shadows.items():
        loop = loops.get(camera_id)
        failed_long_ago = shadow.ended_at is not None and now - shadow.ended_at > RETRY_S
        if wanted.get(camera_id) == shadow.row and loop is not None and not failed_long_ago:
            kept[camera_id] = shadow
        else:
            if loop is not None and loop.shadow is shadow:
                loop.shadow = None
            shadow.close()
    for camera_id, row in wanted.items():
        if camera_id in kept or camera_id not in loops:
            continue
        model = model_row(db, row.model_id)
        if model is None:
            continue
        kept[camera_id] = CameraShadow(
            config, camera_id, row, model, camera_dir(config.runtime_path, camera_id), spare_time
        ).start()
    for camera_id, loop in loops.items():
        loop.shadow = kept.get(camera_id)
    return kept


def _rounded(result: ModelResult) -> ModelResult:
    return msgspec.structs.replace(result, detections=boxes_of(result.detections))
