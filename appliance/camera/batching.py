"""One runner per shared model in the camera process: the cameras that share (model, precision) hand it their
frames, and it runs them one model call at a time, several frames per call where the model takes batches and
a batch pays.

How a call is formed: the first frame to find the model free leads. When other cameras share the model and
batching is on, it waits for their frames a short while: until every sharing camera has a frame waiting, the
batch is full, a trigger's frame arrives, or the earliest deadline among the waiting frames passes (a frame's
deadline is one model-time after it arrived, or sooner when its camera says a newer frame will replace it).
So a frame is never held longer than one model-time for a batch. Frames that arrive while the model is busy
simply wait and go together in the next call. Order is as with turns before: a frame answering a trigger
first, then first come first served; with more frames waiting than a batch holds, the oldest go first.

While a camera has a trigger waiting for its verdict, the other cameras' routine frames do not start a call
that would still run when the trigger's frame is due (from its source's pace; any call when the pace is
unknown, as for a camera that waits for a hardware trigger), at most TRIGGER_HOLD_S and on every model of the
process: the triggered frame then finds the model free instead of queueing behind a routine call begun just
before it arrived (4 cameras on 2 cores: trigger -> verdict p99 197 ms against a budget of 96, measured
under load). The triggered camera's own frames are never held.

One camera alone never waits: its frame runs at once through `Detector.detect`, exactly as without batching.
Batching is on only where the backend takes batches (a dynamic batch axis) and a batch measured at load is
at least `batch_min_gain` times faster per frame than single frames; on a CPU it rarely is, and frames then
go one per call, in turn.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.inference.pipeline import Detections, DetectRequest

logger = logging.getLogger(__name__)

PROBE_ROUNDS = 3
PROBE_BATCH = 4  # batch size the gain is measured at (or the capacity, when smaller)
MODEL_TIME_SMOOTHING = 0.2  # weight of the newest single-frame call in the model-time estimate
TRIGGER_HOLD_S = 0.15  # the longest a routine frame waits for another camera's trigger to be answered


@dataclass
class _Waiting:
    request: DetectRequest
    urgent: bool
    ticket: int
    deadline: float  # monotonic time by which the batch holding this frame must start
    done: bool = False
    result: Detections | None = None
    error: BaseException | None = None
    batch: int = 0
    camera_id: int | None = None
    hold_until: float = 0.0  # a routine frame waits for other cameras' triggers until then

    def order(self) -> tuple[int, int]:
        return (0 if self.urgent else 1, self.ticket)


@dataclass
class BatchPolicy:
    """Whether and how large batches are, from a measurement at load."""

    capacity: int  # frames per call at most (1: batching off)
    gain: float | None  # per-frame speed of a batch over single frames, as measured (None: not measured)
    note: str  # why batching is on or off, in words
    single_ms: float | None = None


def measure_batch_gain(detector: Any, size: int) -> tuple[float, float]:
    """(single-frame ms, gain): median of a few calls of batch 1 and of batch `size` on a blank frame."""
    height, width = detector.input_size
    frame = np.full((height, width, 3), 114, np.uint8)
    single: list[float] = []
    batched: list[float] = []
    requests = [DetectRequest(frame)] * size
    detector.detect_batch(requests)  # compiles the batch shape where an engine does that lazily
    for _ in range(PROBE_ROUNDS):
        t0 = time.perf_counter()
        detector.detect(frame)
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        detector.detect_batch(requests)
        batched.append(time.perf_counter() - t0)
    one, many = float(np.median(single)), float(np.median(batched))
    return one * 1000, (one * size / many) if many > 0 else 0.0


def batch_policy(detector: Any, *, batch_max: int, min_gain: float) -> BatchPolicy:
    """Batching for a loaded model: measured at load where the export takes batches, else off with the reason."""
    capacity = min(int(getattr(detector, "batch_capacity", 1) or 1), batch_max)
    if capacity < 2:
        reason = "batch_max is 1" if batch_max < 2 else "this export has no batch axis (export it again)"
        return BatchPolicy(1, None, f"off: {reason}")
    size = min(capacity, PROBE_BATCH)
    single_ms, gain = measure_batch_gain(detector, size)
    if gain < min_gain:
        return BatchPolicy(
            1,
            gain,
            f"off: a batch of {size} is {gain:.2f}x faster per frame than single frames here "
            f"(batch_min_gain {min_gain:g}); frames run one by one, in turn",
            single_ms,
        )
    return BatchPolicy(
        capacity, gain, f"on: up to {capacity} frames per call ({gain:.2f}x per frame at {size})", single_ms
    )


class TriggerWaits:
    """The cameras of the process with a trigger waiting for its verdict, shared by every model runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # camera id -> when its trigger's frame is due (monotonic; None: unknown)
        self._cameras: dict[int, float | None] = {}
        self._runners: weakref.WeakSet[BatchRunner] = weakref.WeakSet()

    def set(self, camera_id: int, waiting: bool, frame_due: float | None = None) -> None:
        with self._lock:
            if not waiting and camera_id not in self._cameras:
                return
            if waiting:
                self._cameras[camera_id] = frame_due
            else:
                del self._cameras[camera_id]
            runners = list(self._runners)
        if not waiting:
            for runner in runners:
                runner.wake()

    def in_the_way(self, camera_id: int | None, finish_at: float) -> bool:
        """Whether a call of this camera's frame, done at `finish_at`, would still run when another camera's
        trigger frame is due (always, when that one's time is unknown)."""
        return any(
            other != camera_id and (due is None or finish_at > due)
            for other, due in list(self._cameras.items())
        )

    def any(self) -> bool:
        return bool(self._cameras)

    def listen(self, runner: BatchRunner) -> None:
        with self._lock:
            self._runners.add(runner)


class BatchRunner:
    """The shared model's one queue. Camera threads call `run`; the pool calls `exclusive` before closing it."""

    def __init__(
        self, detector: Any, policy: BatchPolicy | None = None, trigger_waits: TriggerWaits | None = None
    ) -> None:
        self.detector = detector
        self.trigger_waits = trigger_waits or TriggerWaits()
        self.policy = policy or BatchPolicy(1, None, "off")
        self.cameras = 1  # cameras that share this model (set by the pool)
        self.batches: Counter[int] = Counter()  # calls by batch size
        self._model_s = (self.policy.single_ms or 0.0) / 1000
        self._cond = threading.Condition()
        self._waiting: list[tuple[tuple[int, int], _Waiting]] = []  # heap by (urgent first, ticket)
        self._ticket = 0
        self._busy = False
        self.trigger_waits.listen(self)

    def wake(self) -> None:
        """A trigger was answered: routine frames held for it may go."""
        with self._cond:
            self._cond.notify_all()

    @property
    def model_ms(self) -> float:
        """The current estimate of one single-frame call (the longest a frame may be held for a batch)."""
        return self._model_s * 1000

    def run(
        self,
        image: np.ndarray,
        conf: float = 0.25,
        iou: float = 0.45,
        *,
        urgent: bool = False,
        newer_frame_at: float | None = None,
        camera_id: int | None = None,
    ) -> tuple[Detections, int]:
        """Detections of one frame and the size of the call it went in. `newer_frame_at` (monotonic): when this
        camera's next frame is due, after which waiting for a batch makes no sense for this one."""
        now = time.monotonic()
        hold = self._model_s if self.policy.capacity > 1 else 0.0
        deadline = now + hold if newer_frame_at is None else min(now + hold, newer_frame_at)
        with self._cond:
            mine = _Waiting(
                DetectRequest(image, conf, iou), urgent, self._ticket, deadline, camera_id=camera_id
            )
            mine.hold_until = now + TRIGGER_HOLD_S
            self._ticket += 1
            heapq.heappush(self._waiting, (mine.order(), mine))
            self._cond.notify_all()
        while True:
            with self._cond:
                while not mine.done and (self._busy or self._next_up() is not mine):
                    self._cond.wait(
                        max(0.0, mine.hold_until - time.monotonic()) if self._held(mine) else None
                    )
                if mine.done:
                    return self._outcome(mine)
                self._busy = True  # this thread leads the next call; the others wait for it
                batch = self._lead()
                if not batch:  # a trigger began while it gathered, and every waiting frame is now held
                    self._busy = False
                    self._cond.notify_all()
                    continue
            self._call(batch)  # with more urgent frames than a batch holds, ours may wait for the next

    def _held(self, mine: _Waiting) -> bool:
        """A routine frame waits while another camera's trigger is unanswered (TRIGGER_HOLD_S at most)."""
        now = time.monotonic()
        return (
            not mine.urgent
            and now < mine.hold_until
            and self.trigger_waits.in_the_way(mine.camera_id, now + self._model_s)
        )

    def _next_up(self) -> _Waiting | None:
        if not self._waiting:
            return None
        if not self.trigger_waits.any():
            return self._waiting[0][1]
        return next((w for _, w in sorted(self._waiting) if not self._held(w)), None)

    def _lead(self) -> list[_Waiting]:
        """With the lock held and the model reserved, as the first frame in line: gather the call's frames."""
        capacity = self.policy.capacity
        while capacity > 1:
            waiting = [w for _, w in self._waiting]
            if len(waiting) >= min(capacity, self.cameras) or any(w.urgent for w in waiting):
                break
            remaining = min(w.deadline for w in waiting) - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        if not self.trigger_waits.any():
            return [heapq.heappop(self._waiting)[1] for _ in range(min(capacity, len(self._waiting)))]
        ready = [w for _, w in sorted(self._waiting) if not self._held(w)][:capacity]
        taken = {id(w) for w in ready}
        self._waiting = [entry for entry in self._waiting if id(entry[1]) not in taken]
        heapq.heapify(self._waiting)
        return ready

    def _call(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                only = batch[0].request
                results = [self.detector.detect(only.image, conf=only.conf, iou=only.iou)]
            else:
                results = self.detector.detect_batch([w.request for w in batch])
            error = None
        except BaseException as exc:  # every camera in the call hears of it
            results, error = [], exc
        elapsed = time.perf_counter() - started
        with self._cond:
            if error is None and len(batch) == 1:
                weight = MODEL_TIME_SMOOTHING if self._model_s else 1.0
                self._model_s += weight * (elapsed - self._model_s)
            self.batches[len(batch)] += 1
            for index, waiting in enumerate(batch):
                waiting.batch = len(batch)
                waiting.error = error
                waiting.result = results[index] if error is None else None
                waiting.done = True
            self._busy = False
            self._cond.notify_all()

    @staticmethod
    def _outcome(mine: _Waiting) -> tuple[Detections, int]:
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result, mine.batch

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model with no call running (to close it): waits for the call in progress."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


@dataclass
class BatchStats:
    """A camera's share: how many of its frames went in calls of each size."""

    sizes: Counter[int] = field(default_factory=Counter)

    def add(self, size: int) -> None:
        self.sizes[size] += 1

    def summary(self) -> dict[str, int]:
        return {str(size): count for size, count in sorted(self.sizes.items())}
