"""Batching across cameras (appliance/camera/batching.py) on a real model through OpenVINO: one camera runs as
before, frames of cameras sharing a model go in one call with each camera's own thresholds, a frame is never
held longer than one model-time, triggers go first, every camera gets its fair share, and the camera
process reports the batch sizes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.camera import batching
from appliance.camera.batching import BatchPolicy, BatchRunner, TriggerWaits, batch_policy
from appliance.inference.pipeline import Detections, DetectRequest, load_detector
from tests.inference_support import oracle_onnx, shapes_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(tiny_yolo: Path) -> Any:
    return load_detector(
        oracle_onnx(str(tiny_yolo), 320),
        backend="openvino",
        class_names=["square", "disc"],
        options={"max_batch": 4},
    )


class Recording:
    """The real detector, with every call it receives written down (which frames, one by one or batched)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.calls: list[list[int]] = []  # per call: the frames' marks (pixel [0, 0, 0])
        self.batch_capacity = detector.batch_capacity
        self.input_size = detector.input_size
        self._lock = threading.Lock()

    def detect(
        self, image: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
    ) -> Detections:
        with self._lock:
            self.calls.append([int(image[0, 0, 0])])
        return self.detector.detect(image, conf=conf, iou=iou, max_det=max_det)

    def detect_batch(self, requests: list[DetectRequest]) -> list[Detections]:
        with self._lock:
            self.calls.append([int(r.image[0, 0, 0]) for r in requests])
        return self.detector.detect_batch(requests)


def marked(mark: int, seed: int = 0) -> np.ndarray:
    image = shapes_image(seed).copy()
    image[0, 0] = mark
    return image


def start(jobs: list[Any]) -> tuple[list[threading.Thread], list[Any]]:
    """Run each job in a thread, started in this order; (threads, results filled in as they end)."""
    results: list[Any] = [None] * len(jobs)

    def work(index: int) -> None:
        results[index] = jobs[index]()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    return threads, results


def joined(threads: list[threading.Thread], results: list[Any]) -> list[Any]:
    for thread in threads:
        thread.join(60)
    return results


def test_one_camera_alone_runs_at_once_through_detect(detector: Any) -> None:
    recording = Recording(detector)
    runner = BatchRunner(recording, BatchPolicy(4, 3.0, "on", single_ms=5000.0))  # a long window, never used
    image = marked(7)
    started = time.monotonic()
    result, size = runner.run(image, 0.05)
    assert time.monotonic() - started < 2.5  # it did not wait for frames no other camera will send
    assert size == 1 and recording.calls == [[7]] and runner.batches == Counter({1: 1})
    assert result.detections == detector.detect(image, conf=0.05).detections


def test_frames_of_cameras_sharing_a_model_go_in_one_call_with_their_own_thresholds(detector: Any) -> None:
    recording = Recording(detector)
    runner = BatchRunner(recording, BatchPolicy(4, 3.0, "on", single_ms=50.0))
    runner.cameras = 4
    thresholds = [0.03, 0.04, 0.05, 0.06]
    with runner.exclusive():  # the model is busy: the four frames arrive meanwhile
        running = start([lambda i=i: runner.run(marked(10 + i, seed=i), thresholds[i]) for i in range(4)])  # type: ignore[misc]
    results = joined(*running)
    assert recording.calls == [[10, 11, 12, 13]] and runner.batches == Counter({4: 1})
    for i, (result, size) in enumerate(results):
        assert size == 4
        assert result.detections == detector.detect(marked(10 + i, seed=i), conf=thresholds[i]).detections


def test_a_frame_is_never_held_longer_than_one_model_time_or_past_its_successor(detector: Any) -> None:
    runner = BatchRunner(Recording(detector), BatchPolicy(4, 3.0, "on", single_ms=1500.0))
    runner.cameras = 4  # three other cameras could send a frame, but do not
    started = time.monotonic()
    _, size = runner.run(marked(1), 0.05)
    waited = time.monotonic() - started
    assert size == 1 and 1.4 < waited < 1.4 + 5  # the window (one model-time), then alone
    started = time.monotonic()
    runner.run(marked(2), 0.05, newer_frame_at=time.monotonic())  # its camera's next frame is due now
    assert time.monotonic() - started < 1.4


def test_a_trigger_frame_goes_first_then_first_come_first_served(detector: Any) -> None:
    recording = Recording(detector)
    runner = BatchRunner(recording, BatchPolicy(2, 3.0, "on", single_ms=10.0))
    runner.cameras = 4
    with runner.exclusive():
        threads = [
            threading.Thread(target=runner.run, args=(marked(m), 0.05), kwargs={"urgent": m == 99})
            for m in (1, 2, 3, 99)
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert recording.calls == [[99, 1], [2, 3]]


def test_routine_frames_wait_while_another_cameras_trigger_is_unanswered(
    detector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Camera 1 has a trigger waiting for its frame: the other cameras' routine frames do not start a call
    that the triggered frame would queue behind (at most TRIGGER_HOLD_S); camera 1's own frames are not held."""
    monkeypatch.setattr(batching, "TRIGGER_HOLD_S", 5.0)  # longer than this machine may take to get there
    recording = Recording(detector)
    waits = TriggerWaits()
    runner = BatchRunner(recording, BatchPolicy(1, None, "off"), waits)
    waits.set(1, True)
    routine = start([lambda m=m: runner.run(marked(m), 0.05, camera_id=2) for m in (20, 21)])  # type: ignore[misc]
    own = runner.run(marked(10), 0.05, camera_id=1)  # the triggered camera's frame from before the trigger
    assert own[1] == 1 and recording.calls == [[10]]
    time.sleep(0.05)
    assert recording.calls == [[10]]  # still held
    runner.run(marked(99), 0.05, urgent=True, camera_id=1)  # the trigger's frame: at once
    waits.set(1, False)  # answered: the held frames go, in their order
    joined(*routine)
    assert recording.calls == [[10], [99], [20], [21]]
    # A routine call that ends before the trigger's frame is due (from its source's pace) goes at once.
    waits.set(1, True, frame_due=time.monotonic() + 30.0)
    started = time.monotonic()
    runner.run(marked(22), 0.05, camera_id=2)
    assert time.monotonic() - started < 4.0 and recording.calls[-1] == [22]
    waits.set(1, True, frame_due=time.monotonic())  # due now: it would be in the way
    late = start([lambda: runner.run(marked(23), 0.05, camera_id=2)])
    time.sleep(0.3)
    assert recording.calls[-1] == [22]
    waits.set(1, False)
    joined(*late)
    assert recording.calls[-1] == [23]
    # A trigger never answered holds routine frames for TRIGGER_HOLD_S, no longer.
    monkeypatch.setattr(batching, "TRIGGER_HOLD_S", 1.0)
    waits.set(3, True)
    started = time.monotonic()
    runner.run(marked(30), 0.05, camera_id=2)
    held = time.monotonic() - started
    assert 0.95 <= held < 3.0, held
    waits.set(3, False)
    started = time.monotonic()
    runner.run(marked(31), 0.05, camera_id=2)
    assert time.monotonic() - started < 0.9  # nothing waits: no hold


def test_every_camera_gets_its_share(detector: Any) -> None:
    for policy in (BatchPolicy(4, 3.0, "on", single_ms=20.0), BatchPolicy(1, None, "off")):
        runner = BatchRunner(detector, policy)
        runner.cameras = 4
        done = Counter[int]()

        def camera(
            index: int,
            runner: BatchRunner = runner,
            done: Counter[int] = done,
            stop: float = time.monotonic() + 3,
        ) -> None:
            image = marked(index)
            while time.monotonic() < stop:
                runner.run(image, 0.05)
                done[index] += 1

        joined(*start([lambda i=i: camera(i) for i in range(4)]))  # type: ignore[misc]
        assert min(done.values()) / max(done.values()) >= 0.8, (policy.note, done)
        assert (max(runner.batches) > 1) == (policy.capacity > 1), runner.batches


def test_an_error_in_a_call_reaches_every_camera_in_it(detector: Any) -> None:
    class Failing(Recording):
        def detect_batch(self, requests: list[DetectRequest]) -> list[Detections]:
            raise RuntimeError("engine lost")

    runner = BatchRunner(Failing(detector), BatchPolicy(2, 3.0, "on", single_ms=10.0))
    runner.cameras = 2
    with runner.exclusive():
        outcomes = []

        def run() -> None:
            try:
                runner.run(marked(1), 0.05)
                outcomes.append("ok")
            except RuntimeError as exc:
                outcomes.append(str(exc))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(30)
    assert outcomes == ["engine lost", "engine lost"]
    assert runner.run(marked(1), 0.05, newer_frame_at=0.0)  # the runner itself goes on (one frame: detect)


def test_batching_is_on_only_where_a_batch_pays(detector: Any, tiny_yolo: Path, tmp_path: Path) -> None:
    on = batch_policy(detector, batch_max=8, min_gain=0.0)
    assert on.capacity == 4 and on.gain and on.gain > 0 and on.single_ms and on.note.startswith("on:")
    off = batch_policy(detector, batch_max=8, min_gain=1000.0)
    assert off.capacity == 1 and "x faster per frame" in off.note and "batch_min_gain 1000" in off.note
    assert batch_policy(detector, batch_max=1, min_gain=0.0).note == "off: batch_max is 1"
    single = load_detector(oracle_onnx(str(tiny_yolo), 320), backend="openvino", options={"max_batch": 1})
    assert "no batch axis" in batch_policy(single, batch_max=8, min_gain=0.0).note


def test_cameras_sharing_a_model_report_their_batch_sizes(tiny_yolo: Path, tmp_path: Path) -> None:
    """The camera process with batching forced on (batch_min_gain 0) and two fast file cameras on one model."""
    import msgspec

    from appliance.caller import CurrentUser
    from appliance.camera.publish import camera_dir, read_status
    from appliance.config import load_config
    from appliance.db import migrate, open_database
    from appliance.stations import cameras
    from appliance.stations.schemas import CameraSettings, CameraWrite
    from tests.camera_sources import camera_process, deploy_model, write_video
    from tests.workers import wait_for

    admin = CurrentUser(id=1, username="admin", role="admin", token_id="test")

    def add_file_camera(name: str, video: Path) -> int:
        settings = CameraSettings(source_type="file", source=str(video), fps=200.0, confidence=0.05)
        return cameras.create_camera(db, CameraWrite(name=name, enabled=True, settings=settings), admin).id

    config = load_config(
        env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), batch_min_gain=0.0
    )
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, oracle_onnx(str(tiny_yolo), 64), None, "oracle")
    video = write_video(tmp_path / "fast.avi", count=30, fps=200.0)
    ids = [add_file_camera(f"cam{i}", video) for i in range(2)]

    def statuses() -> list[dict[str, Any]]:
        found = [read_status(camera_dir(config.runtime_path, i)) for i in ids]
        return [msgspec.to_builtins(s) if s is not None else {} for s in found]

    with camera_process(config) as process:
        wait_for(lambda: all(sum(s.get("batch_sizes", {}).values()) > 40 for s in statuses()), timeout=60)
        shared = next(iter(process.models.loaded.values()))
        assert shared.runner.cameras == 2 and shared.runner.policy.capacity > 1
        final = statuses()
    for status in final:
        assert set(status["batch_sizes"]) <= {"1", "2"} and status["batch_sizes"].get("2", 0) > 0, status
        assert "batches on:" in status["model_note"] and "openvino" in status["model_note"]
    db.conn.close()
