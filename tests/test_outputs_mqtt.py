"""MQTT end to end against a real Mosquitto on a loopback port, with real events from the real camera process
(`appliance camera`, a file-source camera and the hand-built colour detector) and `appliance outputs`:
events in order with QoS 1; the broker killed for 20 s while events keep coming; the box's processes
restarted during an outage; the last will when the outputs process dies; a trigger message inspects."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.caller import CurrentUser
from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.outputs import service
from appliance.outputs.schemas import MqttSettings, OutputWrite
from appliance.stations import cameras, triggers
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule
from tests.camera_sources import build_colour_onnx, deploy_model, write_scenes
from tests.line_peers import BoxProcess, Mosquitto, Subscriber, first_occurrences, need_mosquitto
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
BOX = "box-a"
RULE = Rule(name="two squares", classes=["square"], condition="==", count=2, min_confidence=0.5)
# The verdict flips every 8 frames at 15 fps with debounce 1: about two events a second, for as long as the
# camera runs (a file source loops).
FLICKER = [(8, [(1, 1), (1, 3)], []), (8, [(1, 1)], [])]


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


class Line:
    """A box (catalog, camera, output to the broker) and the line's broker and subscriber."""

    def __init__(self, tmp_path: Path, colour_onnx: Path) -> None:
        need_mosquitto()
        self.tmp = tmp_path
        self.config = load_config(
            env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), box_id=BOX
        )
        self.db = open_database(self.config.db_path)
        migrate(self.db, self.config.db_path)
        deploy_model(self.config, self.db, colour_onnx, None, "colour")
        self.broker = Mosquitto(tmp_path / "broker", persistent=True).start()
        self.subscriber = Subscriber(self.broker.port, [f"appliance/{BOX}/#"], persistent=True).start()
        self.output_id = service.create_output(
            self.db,
            self.config,
            OutputWrite(
                name="line", settings=MqttSettings(host="127.0.0.1", port=self.broker.port, keepalive_s=5)
            ),
            ADMIN,
        ).id
        self.camera = BoxProcess("camera", self.config)
        self.outputs = BoxProcess("outputs", self.config)

    def add_camera(self, name: str, **settings: Any) -> int:
        video = write_scenes(self.tmp / f"{name}.avi", FLICKER, fps=15)
        fields: dict[str, Any] = {
            "source": str(video),
            "confidence": 0.5,
            "rules": [RULE],
            "debounce_frames": 1,
        }
        body = CameraWrite(name=name, enabled=True, settings=CameraSettings(**(fields | settings)))
        return cameras.create_camera(self.db, body, ADMIN).id

    def event_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM inspection_events ORDER BY id").fetchall()]

    def logs(self) -> str:
        return f"camera:\n{self.camera.log_text()[-3000:]}\noutputs:\n{self.outputs.log_text()[-3000:]}"

    def close(self) -> None:
        for process in (self.camera, self.outputs):
            process.stop()
        print(self.logs())  # shown when the test failed
        self.subscriber.stop()
        self.broker.stop()
        self.db.conn.close()


@pytest.fixture
def line(tmp_path: Path, colour_onnx: Path) -> Iterator[Line]:
    found = Line(tmp_path, colour_onnx)
    yield found
    found.close()


def received_ids(line: Line) -> list[int]:
    return [e["event_id"] for e in line.subscriber.events()]


def assert_all_arrived_in_order(line: Line, stored: list[int]) -> None:
    got = received_ids(line)
    firsts = first_occurrences(got)
    assert firsts == sorted(firsts), "events arrived out of order"
    assert set(stored) <= set(firsts), f"lost: {sorted(set(stored) - set(firsts))[:20]}"


def test_events_arrive_in_order_and_survive_a_20_s_broker_outage(line: Line) -> None:
    camera_id = line.add_camera("press")
    line.camera.start()
    line.outputs.start()
    wait_for(lambda: len(received_ids(line)) >= 5, timeout=60, what="first events")
    first = line.subscriber.events()[0]
    assert (
        first["schema"] == "appliance.event/1" and first["box_id"] == BOX and first["camera_id"] == camera_id
    )
    assert (
        first["camera_name"] == "press"
        and first["verdict"] in ("ok", "ng")
        and "total_ms" in first["latencies"]
    )
    online = [json.loads(p) for p, retained in line.subscriber.on_topic("/status")]
    assert online and online[0]["state"] == "online" and online[0]["cameras"][0]["name"] == "press"
    assert online[0]["deployed_model"]["name"] == "colour" and online[0]["disk"]["free_mb"] > 0

    line.broker.stop()
    before = len(line.event_ids())
    time.sleep(20)  # the camera keeps inspecting; the outbox keeps every event
    during = len(line.event_ids()) - before
    assert during >= 10, f"only {during} events during the outage"
    status = service.get_output(line.db, line.config, line.output_id, ADMIN).status
    assert status.backlog >= during - 2 and not status.connected and status.last_error
    line.broker.start()
    line.subscriber.connected.wait(10)
    target = line.event_ids()[-1]
    wait_for(lambda: target in received_ids(line), timeout=60, what="the backlog")
    assert_all_arrived_in_order(line, [i for i in line.event_ids() if i <= target])
    status = wait_for(  # the status file is replaced every second
        lambda: (s := service.get_output(line.db, line.config, line.output_id, ADMIN).status).connected and s,
        timeout=5,
    )
    assert status.dropped == 0 and status.backlog == 0 and status.last_event_id >= target


def test_restarting_the_box_processes_during_an_outage_loses_nothing(line: Line) -> None:
    line.add_camera("press")
    line.camera.start()
    line.outputs.start()
    wait_for(lambda: len(received_ids(line)) >= 3, timeout=60, what="first events")
    line.broker.stop()
    time.sleep(4)
    line.outputs.signal(signal.SIGKILL)  # a crash of the outputs process with a backlog
    line.camera.signal(signal.SIGTERM)  # and a restart of the camera process
    stopped_at = line.event_ids()[-1]
    line.camera.start()
    line.outputs.start()
    wait_for(lambda: line.event_ids()[-1] >= stopped_at + 4, timeout=60, what="new events")
    line.broker.start()
    target = line.event_ids()[-1]
    wait_for(lambda: target in received_ids(line), timeout=60, what="the backlog")
    assert_all_arrived_in_order(line, [i for i in line.event_ids() if i <= target])


def test_last_will_on_death_offline_on_stop_and_a_trigger_message_inspects(line: Line) -> None:
    gate = line.add_camera("gate", mode="triggered")
    line.camera.start()
    line.outputs.start()
    wait_for(
        lambda: any(json.loads(p)["state"] == "online" for p, _ in line.subscriber.on_topic("/status")),
        timeout=30,
        what="the online status",
    )
    wait_for(lambda: (line.config.runtime_path / "cameras" / str(gate) / "status.json").exists(), timeout=30)
    time.sleep(2)  # the model is loaded and frames flow
    line.subscriber.publish(f"appliance/{BOX}/cameras/{gate}/trigger", b"{}")
    event = wait_for(
        lambda: next((e for e in line.subscriber.events() if e["camera_id"] == gate), None),
        timeout=30,
        what="the triggered event",
    )
    assert event["mode"] == "triggered" and event["trigger_id"]
    assert triggers.get_trigger(line.db, gate, event["trigger_id"]).source == "mqtt"
    assert event["latencies"]["trigger_to_frame_ms"] >= 0

    line.outputs.signal(signal.SIGKILL)  # death: the broker publishes the last will
    will = wait_for(
        lambda: [json.loads(p) for p, _ in line.subscriber.on_topic("/status") if b"offline" in p],
        timeout=20,
        what="the last will",
    )
    assert will[-1] == {"schema": "appliance.status/1", "box_id": BOX, "state": "offline", "ts": None,
                        "version": None, "cameras": None, "deployed_model": None, "disk": None}  # fmt: skip
    late = Subscriber(line.broker.port, [f"appliance/{BOX}/status"], client_id="late").start()
    try:  # retained: a dashboard that connects later sees the box offline
        wait_for(lambda: late.on_topic("/status"), timeout=10)
        assert late.on_topic("/status")[-1][1] is True and b"offline" in late.on_topic("/status")[-1][0]
    finally:
        late.stop()
    line.outputs.start()
    wait_for(lambda: b"online" in line.subscriber.on_topic("/status")[-1][0], timeout=30, what="online again")
    assert line.outputs.signal(signal.SIGTERM) == 0  # a clean stop says offline itself
    wait_for(
        lambda: b"offline" in line.subscriber.on_topic("/status")[-1][0], timeout=10, what="offline on stop"
    )
