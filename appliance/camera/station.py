"""One camera's loop (a thread of the camera process): newest frame -> shared model (in turn) -> rules ->
verdict -> JPEG -> publish, and the inspection events of its mode handed to the event writer.

Modes: continuous (every frame is evaluated; an event when the debounced verdict changes), triggered (the
first frame that arrived after a trigger is inspected; one event per trigger), interval (one inspection
every `interval_s`). Triggers are honoured in every mode. The loop touches neither the catalog nor any
output: triggers arrive through `add_trigger`, events leave through the writer's non-blocking `submit`.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, cast

import cv2
import msgspec

from appliance.camera.batching import BatchStats
from appliance.camera.capture import Frame, SourceSpec
from appliance.camera.contracts import FrameDetection, FrameMeta
from appliance.camera.gige_source import open_source
from appliance.camera.latencies import inspection_latencies
from appliance.camera.models import ModelPool
from appliance.camera.publish import Publisher, RateMeter, RollingStats
from appliance.camera.spare_time import SpareTime
from appliance.camera.writer import EventWriter
from appliance.stations.contracts import InspectionEvent, Mode, TriggerRow, ZoneShape
from appliance.stations.rules import Debouncer, Evaluation, evaluate
from appliance.stations.schemas import CameraSettings, CameraState, CameraStatus, StageTiming
from appliance.stations.triggers import TRIGGER_TIMEOUT_S

if TYPE_CHECKING:
    from appliance.camera.shadow import CameraShadow

logger = logging.getLogger(__name__)


def source_spec(settings: CameraSettings) -> SourceSpec:
    s = settings
    return SourceSpec(
        s.source_type, s.source.strip(), s.width, s.height, s.fps, s.open_timeout_ms, s.read_timeout_ms,
        s.genicam,
    )  # fmt: skip


def is_a_part(frame: Frame) -> bool:
    """A frame of a camera in its own trigger mode (software or its input line): each one is a part, inspected
    even when a box trigger came after it (skipping it would lose that part's verdict)."""
    return frame.camera is not None and frame.camera.trigger not in (None, "free_run")


class CameraLoop:
    def __init__(
        self,
        camera_id: int,
        name: str,
        settings: CameraSettings,
        models: ModelPool,
        writer: EventWriter,
        publisher: Publisher,
        *,
        revision: int | None = None,
        spare_time: SpareTime | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.spare_time = (
            spare_time or SpareTime()
        )  # the process's one: candidates pause while a frame is judged
        self.name = name
        self.models = models
        self.writer = writer
        self.publisher = publisher
        self.stop = threading.Event()
        self.stats = RollingStats()
        self.rate = RateMeter()
        self.published = 0
        self.inspections = 0  # frames evaluated by the model and rules (the line's heartbeat)
        self.events = 0
        self.frames_before_trigger = 0  # frames skipped while a trigger waited for a newer one
        self.last_seq = 0
        self.last_size = (0, 0)
        self.last_verdict: str | None = None
        self.last_failing: list[str] = []
        self.model_note = "no model deployed"
        self.batches = BatchStats()  # sizes of the model calls this camera's frames went in
        self.model_id: int | None = None
        self.model_name: str | None = None
        self.shadow: CameraShadow | None = None  # a candidate model beside this camera's (camera/shadow.py)
        self._triggers: collections.deque[TriggerRow] = collections.deque()
        self._trigger_hold = False  # the candidates are paused while a trigger waits (camera/spare_time.py)
        self._trigger_hold_lock = threading.Lock()
        self._judging = (settings, revision)  # one object: a frame never pairs settings with another revision
        self._spec = source_spec(settings)
        self._debouncer = Debouncer(settings.debounce_frames)
        self._next_interval = time.monotonic() + settings.interval_s
        self.source = open_source(self._spec).start()
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera_id}", daemon=True)

    def start(self) -> CameraLoop:
        self._thread.start()
        return self

    @property
    def settings(self) -> CameraSettings:
        return self._judging[0]

    @property
    def _settings(self) -> CameraSettings:
        return self._judging[0]

    @property
    def judging(self) -> tuple[CameraSettings, int | None]:
        """The settings that judge the next frame and the id of their revision (stations/revisions.py)."""
        return self._judging

    def apply(self, name: str, settings: CameraSettings, revision: int | None = None) -> bool:
        """New settings; False when the source changed (the caller replaces the loop)."""
        if source_spec(settings) != self._spec:
            return False
        self.name = name
        if settings.debounce_frames != self._settings.debounce_frames or settings.mode != self._settings.mode:
            self._debouncer = Debouncer(settings.debounce_frames)
        if settings.interval_s != self._settings.interval_s or settings.mode != self._settings.mode:
            self._next_interval = time.monotonic() + settings.interval_s
        self._judging = (settings, revision)
        return True

    def add_trigger(self, trigger: TriggerRow) -> None:
        self._triggers.append(trigger)
        self._hold_while_triggered()
        self.source.trigger_requested()  # a camera in software-trigger mode exposes a frame for it

    def close(self, timeout: float = 2.0) -> None:
        self.stop.set()
        self.source.close(timeout=timeout)
        self._thread.join(timeout)
        for trigger in list(self._triggers):
            self.writer.expire(trigger.id, "the camera stopped before a frame could be inspected")
        self._triggers.clear()
        self._hold_while_triggered()
        try:
            self.publisher.remove()
        except OSError:
            logger.warning("could not clear camera %s's runtime files", self.camera_id, exc_info=True)

    def _hold_while_triggered(self) -> None:
        """Shadow candidates pause from a trigger's arrival to its verdict (the watcher thread adds triggers,
        the loop answers them: each calls this after changing the queue, so the hold follows the queue)."""
        with self._trigger_hold_lock:
            waiting = bool(self._triggers)
            if waiting != self._trigger_hold:
                (self.spare_time.hold if waiting else self.spare_time.release)()
                try:  # the loop may answer it meanwhile (then the hold ends at its next call)
                    due = self.source.next_frame_due(self._triggers[0].requested_mono) if waiting else None
                except IndexError:
                    due = None
                self.models.trigger_waits.set(self.camera_id, waiting, due)
                self._trigger_hold = waiting

    # --- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                started = time.monotonic()
                waited = time.perf_counter()
                frame = self.source.latest(self.last_seq, timeout=0.2)
                self._expire_old_triggers()
                if frame is None:
                    self._hold_while_triggered()
                    continue
                self.last_seq = frame.seq
                if (
                    self._triggers
                    and not is_a_part(frame)
                    and frame.captured_at <= self._triggers[0].requested_mono
                ):
                    # Grabbed before the trigger came: its answer is the next frame, and no model call of this
                    # camera may stand in that frame's way (the other cameras' wait too: batching.py).
                    self.frames_before_trigger += 1
                    self._hold_while_triggered()
                    continue
                with self.spare_time.busy():
                    self.process(frame, wait_ms=(time.perf_counter() - waited) * 1000)
                self._hold_while_triggered()
                if self._settings.max_fps:
                    self.stop.wait(max(0.0, 1.0 / self._settings.max_fps - (time.monotonic() - started)))
            except Exception:
                logger.exception("camera %s loop error", self.camera_id)
                self.stop.wait(0.5)

    def _expire_old_triggers(self) -> None:
        now = time.monotonic()
        while self._triggers and now - self._triggers[0].requested_mono > TRIGGER_TIMEOUT_S:
            trigger = self._triggers.popleft()
            reason = self.source.error or "no frame arrived in time"
            self.writer.expire(trigger.id, f"not inspected within {TRIGGER_TIMEOUT_S:.0f} s: {reason}")

    def process(self, frame: Frame, wait_ms: float = 0.0) -> None:
        s, revision = self._judging
        timings: dict[str, float] = {"wait": wait_ms, "capture": frame.capture_ms}
        detections: list[FrameDetection] = []
        model, self.model_note = self.models.get(self.camera_id)
        model_id = model_version = None
        if model is not None:
            t0 = time.perf_counter()
            # A frame that answers a trigger goes before the other cameras' routine frames.
            urgent = bool(self._triggers) and self._triggers[0].requested_mono < frame.captured_at
            try:
                fps = self.source.source_fps()  # its next frame makes this one stale: no batch waits past it
                newer_at = frame.captured_at + 1.0 / fps if fps > 0 else None
                result, batch = model.runner.run(
                    frame.image, s.confidence, s.iou, urgent=urgent, newer_frame_at=newer_at,
                    camera_id=self.camera_id,
                )  # fmt: skip
                self.batches.add(batch)
                stages = sum(
                    result.timings.get(k, 0.0) for k in ("preprocess_ms", "inference_ms", "postprocess_ms")
                )
                timings["wait_model"] = max(0.0, (time.perf_counter() - t0) * 1000 - stages)
            except Exception:
                logger.exception("camera %s: inference failed; going on without detections", self.camera_id)
                self.model_note = "inference failed; see the camera log"
            else:
                detections = result.detections
                model_id, model_version = model.model_id, model.version
                timings["preprocess"] = result.timings.get("preprocess_ms", 0.0)
                timings["inference"] = result.timings.get("inference_ms", 0.0)
                timings["postprocess"] = result.timings.get("postprocess_ms", 0.0)
        self.model_id, self.model_name = (model_id, model.name) if model is not None else (None, None)
        t_rules = time.perf_counter()
        evaluation = evaluate(s.rules, s.zones, detections) if model_id is not None else None
        if evaluation is not None:
            self.inspections += 1
        decided = time.monotonic()
        timings["rules"] = (time.perf_counter() - t_rules) * 1000
        events = self._events_for(frame, evaluation, decided, timings) if evaluation is not None else []

        t0 = time.perf_counter()
        ok, encoded = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            logger.warning("camera %s: JPEG encoding failed for frame %s", self.camera_id, frame.seq)
            return
        jpeg = encoded.tobytes()
        timings["encode"] = (time.perf_counter() - t0) * 1000
        timings["frame_age"] = (time.monotonic() - frame.captured_at) * 1000
        height, width = frame.image.shape[:2]
        self.last_size = (width, height)
        self.published += 1
        self.rate.tick()
        frame_ts = time.time() - (time.monotonic() - frame.captured_at)
        if evaluation is not None:
            self.last_verdict = (
                self._debouncer.current
                if s.mode == "continuous" and self._debouncer.current
                else evaluation.verdict
            )
            self.last_failing = evaluation.failing_rules
        else:
            self.last_verdict, self.last_failing = None, []
        meta = FrameMeta(
            seq=self.published,
            camera_id=self.camera_id,
            source_seq=frame.seq,
            ts=frame_ts,
            width=width,
            height=height,
            detections=detections,
            verdict=evaluation.verdict if evaluation is not None else None,
            failing_rules=evaluation.failing_rules if evaluation is not None else [],
            timings={k: round(v, 2) for k, v in timings.items()},
            model_id=model_id,
            fps=round(self.rate.rate(), 2),
            dropped=self.source.dropped + self.frames_before_trigger,
        )
        self.publisher.publish_frame(jpeg, meta)
        self.stats.add(timings)
        boxes = boxes_of(detections) if events else []
        for event in events:
            event = msgspec.structs.replace(
                event,
                ts=frame_ts,
                width=width,
                height=height,
                detections=boxes,
                camera_features=frame.camera,
                settings_revision=revision,
                model_version=model_version,
            )
            if self.writer.submit(event, jpeg if s.snapshots else None):
                self.events += 1
        shadow = self.shadow
        if shadow is not None and evaluation is not None:  # after the verdict is out: it never waits for this
            shadow.consider(frame.image, jpeg, frame_ts, s, model_id, detections, evaluation, events)

    def _events_for(
        self, frame: Frame, evaluation: Evaluation, decided: float, timings: dict[str, float]
    ) -> list[InspectionEvent]:
        s = self._settings
        out: list[InspectionEvent] = []
        untriggered = inspection_latencies(frame.captured_at, decided, timings)
        # Triggers whose request came before this frame arrived: this frame is newer than each of them.
        while self._triggers and self._triggers[0].requested_mono < frame.captured_at:
            trigger = self._triggers.popleft()
            latencies = inspection_latencies(frame.captured_at, decided, timings, trigger.requested_mono)
            out.append(self._event("triggered", evaluation, latencies, trigger.id))
        if is_a_part(frame):
            # The camera's own trigger (software or its input line): this frame is one inspection.
            return out or [self._event("triggered", evaluation, untriggered)]
        if s.mode == "continuous":
            changed = self._debouncer.feed(evaluation.verdict)
            if changed is not None:
                out.append(self._event("continuous", evaluation, untriggered))
        elif s.mode == "interval" and frame.captured_at >= self._next_interval:
            self._next_interval += s.interval_s
            if self._next_interval <= frame.captured_at:  # fell behind (source lost): start over from now
                self._next_interval = frame.captured_at + s.interval_s
            out.append(self._event("interval", evaluation, untriggered))
        return out

    def _event(
        self, mode: Mode, evaluation: Evaluation, latencies: dict[str, float], trigger_id: int | None = None
    ) -> InspectionEvent:
        return InspectionEvent(
            camera_id=self.camera_id,
            ts=0.0,  # set by process() once the frame's wall time is known
            mode=mode,
            verdict=evaluation.verdict,
            trigger_id=trigger_id,
            failing_rules=list(evaluation.failing_rules),
            counts=evaluation.counts,
            detections=[],  # process() fills in the frame's boxes, its wall time and size
            zones=[ZoneShape(z.name, list(z.points)) for z in self._settings.zones],
            model_id=self.model_id,
            latencies=latencies,
        )

    # --- status --------------------------------------------------------------------------------------

    def status(self) -> CameraStatus:
        s = self._settings
        state = cast(CameraState, self.source.state)
        width, height = self.last_size
        model_id, model_name, model_note = self.model_id, self.model_name, self.model_note
        if self.published == 0 or state != "running":
            # No frame goes through the model now (source lost or not open yet): say what the pool holds for it.
            model, model_note = self.models.get(self.camera_id)
            model_id, model_name = (model.model_id, model.name) if model is not None else (None, None)
        return CameraStatus(
            camera_id=self.camera_id,
            state=state,
            source_type=s.source_type,
            source=self.source.shown_source,
            fps=round(self.rate.rate(), 2),
            source_fps=round(self.source.source_fps(), 2),
            frames=self.published,
            dropped=self.source.dropped + self.frames_before_trigger,
            reconnects=self.source.reconnects,
            source_lost_at=self.source.lost_since,
            retries=self.source.retries,
            model_id=model_id,
            model_name=model_name,
            model_note=model_note,
            batch_sizes=self.batches.summary(),
            error=self.source.error,
            width=width,
            height=height,
            verdict=self.last_verdict,
            failing_rules=self.last_failing,
            events=self.events,
            events_held=self.writer.held,
            storage_note=self.writer.storage_note(),
            timings={k: StageTiming(**v) for k, v in self.stats.summary().items()},
            genicam=self.source.genicam_status(),
            pid=os.getpid(),
            updated_at=time.time(),
            state_since=self.source.state_since,
            last_frame_at=self.source.last_frame_at,
            inspections=self.inspections,
        )


def boxes_of(detections: list[FrameDetection]) -> list[FrameDetection]:
    """The detections as an event stores them: confidence to 4 decimals, coordinates to 0.1 px."""
    return [
        FrameDetection(
            class_id=d.class_id,
            class_name=d.class_name,
            confidence=round(d.confidence, 4),
            x1=round(d.x1, 1),
            y1=round(d.y1, 1),
            x2=round(d.x2, 1),
            y2=round(d.y2, 1),
        )
        for d in detections
    ]
