"""Inspection stations end to end with file sources: the camera process's code in a thread, a real ONNX model
through the real pipeline (a hand-built colour detector whose right answer is known for every frame), rules,
modes, triggers, the event writer and its retention, two cameras at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.caller import CurrentUser
from appliance.camera.publish import camera_dir, read_frame, read_status
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.stations import cameras, events, retention, triggers
from appliance.stations.contracts import EventRow
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule, Zone
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, write_scenes
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
LEFT = Zone("left", [(0, 0), (128, 0), (128, 256), (0, 256)])
RULES = [
    Rule(name="two squares", zone="left", classes=["square"], condition="==", count=2, min_confidence=0.5),
    Rule(name="no disc", classes=["disc"], condition="absent", min_confidence=0.5),
]
# (frames, squares (col, row), discs): ok, ng "two squares", ok, ng "no disc"; the file loops.
SEGMENTS = [
    (15, [(1, 1), (1, 3)], []),
    (15, [(1, 1)], []),
    (15, [(1, 1), (2, 6)], []),
    (15, [(1, 1), (1, 3)], [(6, 6)]),
]
EXPECTED = [("ok", []), ("ng", ["two squares"]), ("ok", []), ("ng", ["no disc"])]


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


@pytest.fixture
def station(tmp_path: Path, colour_onnx: Path) -> Iterator[tuple[Config, Database]]:
    config = load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, colour_onnx, None, "colour")
    yield config, db
    db.conn.close()


def add_camera(db: Database, name: str, video: Path, **settings: Any) -> int:
    fields: dict[str, Any] = {"source_type": "file", "source": str(video), "confidence": 0.5, "zones": [LEFT]}
    fields.update(settings)
    body = CameraWrite(name=name, enabled=True, settings=CameraSettings(**fields))
    return cameras.create_camera(db, body, ADMIN).id


def camera_events(db: Database, camera_id: int) -> list[EventRow]:
    return list(reversed(events.list_events(db, camera_id=camera_id, limit=500)))


def status(config: Config, camera_id: int) -> dict[str, Any]:
    found = read_status(camera_dir(config.runtime_path, camera_id))
    return msgspec.to_builtins(found) if found is not None else {}


def test_continuous_mode_gives_the_expected_verdict_sequence_and_event_rows(
    station: tuple[Config, Database], tmp_path: Path
) -> None:
    config, db = station
    video = write_scenes(tmp_path / "line.avi", SEGMENTS, fps=30)
    camera_id = add_camera(db, "press", video, rules=RULES, debounce_frames=3)
    with camera_process(config):
        wait_for(lambda: len(camera_events(db, camera_id)) >= 9, timeout=40)
        live = status(config, camera_id)
    found = camera_events(db, camera_id)
    sequence = [(e.verdict, e.failing_rules) for e in found]
    # The first event is whatever the video shows once the model is in; from there the scenes cycle.
    rotations = [[EXPECTED[(start + i) % 4] for i in range(len(sequence))] for start in range(4)]
    assert sequence in rotations, sequence
    assert all(e.mode == "continuous" and e.trigger_id is None and e.model_id for e in found)
    no_disc = next(e for e in found if e.failing_rules == ["no disc"])
    assert no_disc.counts == {"*": {"square": 2, "disc": 1}, "left": {"square": 2}}
    assert sorted((d.class_name, d.x1, d.y1) for d in no_disc.detections) == [
        ("disc", 192, 192), ("square", 32, 32), ("square", 32, 96)
    ]  # fmt: skip
    assert [z.name for z in no_disc.zones] == ["left"] and (no_disc.width, no_disc.height) == (256, 256)
    assert all(0 <= e.latencies["total_ms"] < 5000 for e in found)
    # Every event carries the four latencies of the contract (docs/outputs.md); no trigger: 0 to the frame.
    for e in found:
        assert set(e.latencies) == {"trigger_to_frame_ms", "wait_model_ms", "inference_ms", "total_ms"}, (
            e.latencies
        )
        assert e.latencies["trigger_to_frame_ms"] == 0 and e.latencies["wait_model_ms"] >= 0
        assert 0 < e.latencies["inference_ms"] <= e.latencies["total_ms"]
    # Events are ordered in time, each with its snapshot on disk.
    assert [e.ts for e in found] == sorted(e.ts for e in found)
    for e in found:
        assert (
            e.snapshot
            and retention.snapshot_path(config.data_path, e.snapshot).read_bytes()[:2] == b"\xff\xd8"
        )
    assert live["state"] == "running" and live["verdict"] in ("ok", "ng") and live["events"] >= 1


def test_triggered_mode_inspects_a_frame_newer_than_the_trigger(
    station: tuple[Config, Database], tmp_path: Path
) -> None:
    config, db = station
    video = write_scenes(tmp_path / "line.avi", SEGMENTS, fps=15)
    camera_id = add_camera(db, "gate", video, rules=RULES, mode="triggered")
    with camera_process(config):
        wait_for(lambda: status(config, camera_id).get("model_id") is not None, timeout=30)
        time.sleep(1.0)
        assert camera_events(db, camera_id) == []  # triggered mode: no event without a trigger
        requested = []
        for _ in range(8):
            trigger_id = triggers.request_trigger(db, camera_id, "http")
            requested.append((trigger_id, time.time()))
            time.sleep(0.15)
        done = wait_for(
            lambda: (
                all(triggers.get_trigger(db, camera_id, t).status == "done" for t, _ in requested)
                and camera_events(db, camera_id)
            ),
            timeout=20,
        )
    by_trigger = {e.trigger_id: e for e in done}
    assert len(done) == len(requested) == len(by_trigger)
    for trigger_id, asked_at in requested:
        event = by_trigger[trigger_id]
        assert triggers.get_trigger(db, camera_id, trigger_id).event_id == event.id
        assert event.mode == "triggered" and (event.verdict, event.failing_rules) in EXPECTED
        # The inspected frame arrived after the request (the clocks agree to well under a millisecond).
        assert event.ts >= asked_at - 0.002, (event.ts, asked_at)
        lat = event.latencies
        assert lat["trigger_to_frame_ms"] >= 0 and lat["wait_model_ms"] >= 0 and lat["inference_ms"] > 0
        assert (
            lat["total_ms"] + 0.05 >= lat["trigger_to_frame_ms"] + lat["wait_model_ms"] + lat["inference_ms"]
        )


def test_a_trigger_nobody_can_serve_expires_with_the_reason(
    station: tuple[Config, Database], tmp_path: Path
) -> None:
    config, db = station
    missing = add_camera(db, "gone", tmp_path / "missing.avi", mode="triggered")
    with camera_process(config):
        wait_for(lambda: status(config, missing).get("state") == "reconnecting", timeout=20)
        trigger_id = triggers.request_trigger(db, missing, "modbus")
        expired = wait_for(
            lambda: (t := triggers.get_trigger(db, missing, trigger_id)).status == "expired" and t,
            timeout=triggers.TRIGGER_TIMEOUT_S + 10,
        )
    assert "could not open" in (expired.detail or "") and expired.event_id is None


def test_interval_mode_and_two_cameras_at_once_share_one_model(
    station: tuple[Config, Database], tmp_path: Path
) -> None:
    config, db = station
    good = write_scenes(tmp_path / "good.avi", [(20, [(1, 1), (1, 3)], [])], fps=15)
    bad = write_scenes(tmp_path / "bad.avi", [(20, [(1, 1)], [(6, 6)])], fps=15)
    a = add_camera(db, "a", good, rules=RULES, mode="interval", interval_s=0.5)
    b = add_camera(db, "b", bad, rules=RULES, mode="interval", interval_s=0.5)
    with camera_process(config) as process:
        wait_for(lambda: len(camera_events(db, a)) >= 5 and len(camera_events(db, b)) >= 5, timeout=40)
        assert len(process.models.loaded) == 1  # one model, one session, shared by both cameras
        both = [status(config, a), status(config, b)]
    for camera_id, verdict, failing in ((a, "ok", []), (b, "ng", ["two squares", "no disc"])):
        found = camera_events(db, camera_id)
        assert {(e.verdict, tuple(e.failing_rules), e.mode) for e in found} == {
            (verdict, tuple(failing), "interval")
        }
        gaps = [later.ts - earlier.ts for earlier, later in zip(found[1:], found[2:], strict=False)]
        assert all(0.3 < gap < 1.5 for gap in gaps), gaps
    assert all(s["state"] == "running" and s["fps"] > 5 for s in both), both


def test_the_writer_keeps_the_history_within_its_limits(tmp_path: Path, colour_onnx: Path) -> None:
    config = load_config(
        env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), events_max_count=12
    )
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, colour_onnx, None, "colour")
    # Verdict flips every 4 frames at 30 fps and debounce 1: ~15 events a second.
    video = write_scenes(tmp_path / "flicker.avi", [(4, [(1, 1), (1, 3)], []), (4, [(1, 1)], [])], fps=30)
    camera_id = add_camera(db, "flicker", video, rules=RULES, debounce_frames=1)
    with camera_process(config) as process:
        wait_for(lambda: process.writer.stats.written >= 40, timeout=40)
        # Retention runs every few seconds while events keep coming: the history never grows without bound.
        wait_for(lambda: retention.totals(db)[0] <= 12, timeout=10)
    count, size = retention.totals(db)
    assert count <= 12, count  # and once more when the writer stops
    rows = {r[0] for r in db.execute("SELECT snapshot FROM inspection_events")}
    on_disk = {p.relative_to(retention.events_root(config.data_path)).as_posix()
               for p in retention.events_root(config.data_path).rglob("*.jpg")}  # fmt: skip
    assert on_disk == rows and len(rows) == count
    assert size == sum(retention.snapshot_path(config.data_path, r).stat().st_size for r in rows)
    assert camera_events(db, camera_id)[-1].id > 40 - 1
    db.conn.close()


def test_deploying_another_model_leaves_no_frame_without_a_model(
    station: tuple[Config, Database], tmp_path: Path, colour_onnx: Path
) -> None:
    """The camera keeps its model until the next one is loaded: no frame, verdict or event is lost to the swap."""
    config, db = station
    first = db.execute("SELECT id FROM models WHERE deployed = 1").fetchone()[0]
    video = write_scenes(tmp_path / "good.avi", [(20, [(1, 1), (1, 3)], [])], fps=30)
    camera_id = add_camera(db, "swap", video, rules=RULES)
    folder = camera_dir(config.runtime_path, camera_id)
    with camera_process(config):
        wait_for(lambda: (f := read_frame(folder)) is not None and f.meta.model_id == first, timeout=30)
        second = deploy_model(config, db, colour_onnx, None, "colour 2")
        seen: list[int | None] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not seen or seen[-1] != second):
            latest = read_frame(folder)
            if latest is not None:
                seen.append(latest.meta.model_id)
            time.sleep(0.01)
    assert seen[-1] == second and set(seen) <= {first, second}, seen
