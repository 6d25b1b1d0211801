"""Line outputs benchmark: the real camera and outputs processes (`appliance camera`, `appliance outputs`) with a
real Mosquitto on loopback, a file-source camera and the hand-built colour detector of the stations tests.

Figures, in one run:

- event -> MQTT subscriber latency beyond the inspection: arrival at a subscriber minus the verdict's time
  (event `ts` + `total_ms`), median and p99 (target p99 < 20 ms), over an interval camera inspecting every
  0.1 s; baseline in the same run: a bare QoS 1 publish -> subscriber round trip through the same broker;
- Modbus trigger -> verdict readable: a pymodbus client writes the trigger coil and polls until the camera's
  registers show that trigger done; median and p99, with the inspection's own trigger -> verdict time (the
  event's `total_ms`) beside it as the baseline;
- outage recovery: the broker killed for 30 s (`--quick`: 8 s) while the camera keeps inspecting and a burst of
  5,000 events (`--quick`: 1,000) is written the way the camera's writer writes them; after the restart, the
  time to the first delivery, the backlog's drain rate (events/s, measured at the box's outbox) against the
  camera's event rate, and events lost or out of order at the subscriber (target 0).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pymodbus.client import ModbusTcpClient  # noqa: E402

from appliance.caller import CurrentUser  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database  # noqa: E402
from appliance.outputs import outbox, service  # noqa: E402
from appliance.outputs.modbus import BLOCK  # noqa: E402
from appliance.outputs.schemas import ModbusSettings, MqttSettings, OutputWrite  # noqa: E402
from appliance.stations import cameras, events  # noqa: E402
from appliance.stations.contracts import InspectionEvent  # noqa: E402
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule  # noqa: E402
from tests.camera_sources import build_colour_onnx, deploy_model, write_scenes  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.line_peers import BoxProcess, Mosquitto, Subscriber, first_occurrences  # noqa: E402
from tests.workers import wait_for  # noqa: E402

ADMIN = CurrentUser(id=1, username="bench", role="admin", token_id="bench")
BOX = "bench-box"
RULE = Rule(name="two squares", classes=["square"], condition="==", count=2, min_confidence=0.5)
SCENES = [(8, [(1, 1), (1, 3)], []), (8, [(1, 1)], [])]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


def broker_round_trip(port: int, count: int) -> list[float]:
    """Bare QoS 1 publish -> subscriber latency through the same broker (ms): the baseline."""
    sub = Subscriber(port, ["baseline/#"], client_id="bench-baseline").start()
    try:
        for i in range(count):
            sub.publish("baseline/x", json.dumps({"sent": time.time(), "i": i}).encode())
            time.sleep(0.01)
        wait_for(
            lambda: len(sub.on_topic("baseline/x")) >= count,
            timeout=10,
            what="baseline messages",
            interval=0.005,
        )
        with sub.lock:
            return [(at - json.loads(p)["sent"]) * 1000 for t, p, at, _ in sub.messages if t == "baseline/x"]
    finally:
        sub.stop()


def event_latencies(sub: Subscriber, after_id: int) -> list[float]:
    with sub.lock:
        found = [(json.loads(p), at) for t, p, at, _ in sub.messages if t.endswith("/events")]
    return [
        (at - (e["ts"] + e["latencies"]["total_ms"] / 1000)) * 1000
        for e, at in found
        if e["event_id"] > after_id and e["mode"] == "interval"
    ]


def modbus_triggers(port: int, camera_id: int, count: int, db: Any) -> tuple[list[float], list[float]]:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert client.connect()
    took, inspections = [], []
    try:
        for _ in range(count):
            before = client.read_holding_registers(BLOCK * camera_id + 16, count=2).registers
            started = time.perf_counter()
            assert not client.write_coil(BLOCK * camera_id, True).isError()
            while True:
                regs = client.read_holding_registers(BLOCK * camera_id + 14, count=5).registers
                if regs[4] == 2 and regs[2:4] != before:
                    break
                if time.perf_counter() - started > 10:
                    raise SystemExit("a Modbus trigger was not answered within 10 s")
                time.sleep(0.001)
            took.append((time.perf_counter() - started) * 1000)
            trigger_id = regs[2] << 16 | regs[3]
            row = db.execute(
                "SELECT latencies FROM inspection_events WHERE trigger_id = ?", [trigger_id]
            ).fetchone()
            inspections.append(json.loads(row[0])["total_ms"])
            time.sleep(0.15)
    finally:
        client.close()
    return took, inspections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases and an 8 s outage")
    args = parser.parse_args()
    latency_s, triggers_n, outage_s, burst = (10, 20, 8, 1000) if args.quick else (30, 50, 30, 5000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-line-"))
    config = load_config(env={}, data_dir=str(tmp / "data"), runtime_dir=str(tmp / "run"), box_id=BOX)
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, build_colour_onnx(tmp / "model_64.onnx"), None, "colour")
    for name, mode in (("press", "interval"), ("gate", "triggered")):
        video = write_scenes(tmp / f"{name}.avi", SCENES, fps=15)
        settings = CameraSettings(source=str(video), confidence=0.5, rules=[RULE], mode=mode, interval_s=0.1)
        cameras.create_camera(db, CameraWrite(name=name, enabled=True, settings=settings), ADMIN)
    broker = Mosquitto(tmp / "broker", persistent=True).start()
    sub = Subscriber(
        broker.port, [f"appliance/{BOX}/cameras/+/events"], client_id="bench-line", persistent=True
    )
    sub.start()
    modbus_port = free_port()
    mqtt_id = service.create_output(
        db,
        config,
        OutputWrite(name="broker", settings=MqttSettings(host="127.0.0.1", port=broker.port)),
        ADMIN,
    ).id
    service.create_output(
        db,
        config,
        OutputWrite(name="plc", settings=ModbusSettings(host="127.0.0.1", port=modbus_port)),
        ADMIN,
    )
    processes = [BoxProcess("camera", config).start(), BoxProcess("outputs", config).start()]
    results: dict[str, Any] = {"quick": args.quick}
    try:
        wait_for(lambda: len(sub.events()) >= 5, timeout=60, what="the first events", interval=0.005)
        baseline = broker_round_trip(broker.port, 200)
        start_id = max(e["event_id"] for e in sub.events())
        time.sleep(latency_s)
        latencies = event_latencies(sub, start_id)
        results["mqtt_latency_beyond_inspection_ms"] = {
            "events": len(latencies), "median": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "target_p99": 20,
            "worst": [round(v, 1) for v in sorted(latencies)[-3:]],
        }  # fmt: skip
        results["broker_round_trip_ms"] = {"median": pct(baseline, 0.5), "p99": pct(baseline, 0.99)}
        took, inspections = modbus_triggers(modbus_port, 2, triggers_n, db)
        results["modbus_trigger_to_verdict_ms"] = {
            "triggers": len(took), "median": pct(took, 0.5), "p99": pct(took, 0.99),
            "inspection_median": pct(inspections, 0.5), "inspection_p99": pct(inspections, 0.99),
            "beyond_inspection_median": round(statistics.median(t - i for t, i in zip(took, inspections, strict=True)), 2),
        }  # fmt: skip

        broker.stop()
        first = db.execute("SELECT MAX(id) FROM inspection_events").fetchone()[0]
        outage_started = time.monotonic()
        # Besides the camera's events, a burst written the way the camera's writer does (record_events with the
        # outbox hook), so the drain rate is measured over more than one batch.
        outbox.install(config)
        for _ in range(burst // 100):
            now = time.time()
            batch = [
                InspectionEvent(camera_id=1, ts=now, mode="continuous", verdict="ok") for _ in range(100)
            ]
            events.record_events(db, batch)
        time.sleep(max(0.0, outage_s - (time.monotonic() - outage_started)))
        last = db.execute("SELECT MAX(id) FROM inspection_events").fetchone()[0]
        produced = last - first
        backlog = outbox.stats(db)[mqtt_id].backlog
        broker.start()
        # Measured at the box: the outbox backlog as the catalog counts it, polled every 5 ms.
        restarted = time.monotonic()
        wait_for(
            lambda: outbox.stats(db)[mqtt_id].backlog < backlog,
            timeout=60,
            what="the first delivery after the outage",
            interval=0.005,
        )
        reconnect_s = time.monotonic() - restarted
        began = time.monotonic()
        wait_for(
            lambda: (outbox.stats(db)[mqtt_id].last_event_id or 0) >= last,
            timeout=60,
            what="the backlog drained",
            interval=0.005,
        )
        drained_s = time.monotonic() - began
        wait_for(
            lambda: last in {e["event_id"] for e in sub.events()},
            timeout=120,
            what="the backlog at the subscriber",
            interval=0.005,
        )
        stored = {r[0] for r in db.execute("SELECT id FROM inspection_events WHERE id <= ?", [last])}
        got = first_occurrences([e["event_id"] for e in sub.events()])
        results["outage"] = {
            "seconds": outage_s, "events_during": produced, "of_which_burst": burst, "backlog_at_restart": backlog,
            "camera_events_per_s": round((produced - burst) / outage_s, 1),
            "first_delivery_after_restart_s": round(reconnect_s, 2),
            "drain_seconds": round(drained_s, 3),
            "drain_per_s": round(backlog / drained_s, 1) if drained_s else None,
            "drain_vs_camera_rate": round(backlog / drained_s / ((produced - burst) / outage_s), 1) if drained_s else None,
            "lost": len(stored - set(got)), "in_order": got == sorted(got),
        }  # fmt: skip
    finally:
        for process in processes:
            process.stop()
        sub.stop()
        broker.stop()
        db.conn.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-line"
    sys.exit(main())
