"""GigE Vision camera benchmark: Aravis' GigE Vision simulator (`arv-fake-gv-camera-0.8`, 512x512 Mono8 at
25 fps over real GVSP on loopback) read by the camera process (`CameraProcess`, the code `appliance camera`
runs) with the 320 px yolov8n of bench/stations.py.

Same run, same machine state: first the model alone (back to back on a camera frame: its time is the floor
of any trigger -> verdict), then

- free run: frames the loop inspected per second over the simulator's 25 fps (target >= 0.95 when the model
  keeps up: model-only FPS above 25), and frames lost or incomplete per 1,000 the camera sent (target 0);
- software trigger: the camera in TriggerSoftware mode, triggers requested through the catalog as the HTTP
  route, MQTT, OPC UA and Modbus do; trigger -> verdict (the request's monotonic time to the verdict of the
  frame the camera answered with: dispatch, TriggerSoftware, exposure, transfer, conversion, model, rules)
  p50 / p99, against the model alone; triggers answered; frames lost per 1,000.

The simulator gets a loopback address of its own (tests/gige_simulator.py: needs root to add it; otherwise
`--address 127.0.0.1` runs it there). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from appliance.config import load_config  # noqa: E402
from appliance.db import open_database  # noqa: E402
from appliance.inference.pipeline import load_detector  # noqa: E402
from appliance.stations import triggers  # noqa: E402
from appliance.stations.genicam import GenicamSettings  # noqa: E402
from appliance.stations.schemas import CameraSettings, Rule  # noqa: E402
from bench.camera import ModelAlone, add_camera, make_onnx, register_model  # noqa: E402
from tests.camera_sources import camera_process  # noqa: E402
from tests.gige_simulator import Simulator, loopback_address  # noqa: E402
from tests.workers import wait_for  # noqa: E402

SIMULATOR_FPS = 25.0
IMGSZ = 320


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@contextlib.contextmanager
def simulator(folder: Path, address: str | None) -> Iterator[Simulator]:
    with contextlib.ExitStack() as stack:
        address = address or stack.enter_context(loopback_address())
        sim = Simulator(address, f"B{int(time.time()) % 100_000}", folder / "simulator.log")
        stack.callback(sim.kill)
        yield sim.start()


def lost_per_1000(transport: Any) -> float:
    sent = transport.frames + transport.frames_incomplete + transport.frames_lost
    return 1000 * (transport.frames_incomplete + transport.frames_lost) / sent if sent else float("nan")


def free_run(work: Path, onnx: Path, source: str, seconds: float) -> dict[str, Any]:
    config = load_config(env={}, data_dir=str(work / "data-free-run"))
    register_model(config, onnx, IMGSZ)
    db = open_database(config.db_path)
    rules = [Rule(name="anything", condition=">=", count=0)]
    camera_id = add_camera(db, "gige", CameraSettings(source_type="gige", source=source, rules=rules))
    db.conn.close()
    with camera_process(config) as process:
        wait_for(
            lambda: camera_id in process.loops and process.loops[camera_id].model_id is not None,
            60,
            "the model",
        )
        time.sleep(1.5)  # warm-up
        loop = process.loops[camera_id]
        before, t0 = loop.published, time.monotonic()
        time.sleep(seconds)
        delivered = (loop.published - before) / (time.monotonic() - t0)
        status = loop.status()
    assert status.genicam is not None
    return {
        "delivered_fps": delivered,
        "transport": status.genicam.transport,
        "inference_ms": statistics.median(loop.stats.values["inference"]),
    }


def software_trigger(work: Path, onnx: Path, source: str, count: int) -> dict[str, Any]:
    config = load_config(env={}, data_dir=str(work / "data-trigger"))
    register_model(config, onnx, IMGSZ)
    db = open_database(config.db_path)
    settings = CameraSettings(
        source_type="gige",
        source=source,
        mode="triggered",
        genicam=GenicamSettings(trigger="software"),
        rules=[Rule(name="anything", condition=">=", count=0)],
    )
    camera_id = add_camera(db, "gige", settings)
    rng = np.random.default_rng(7)
    with camera_process(config) as process:
        wait_for(lambda: process.models.get(camera_id)[0] is not None, 60, "the model")
        wait_for(
            lambda: camera_id in process.loops and process.loops[camera_id].source.state == "running",
            30,
            "the camera",
        )
        time.sleep(0.5)
        ids = []
        for _ in range(count):  # at times unrelated to anything the camera does
            ids.append(triggers.request_trigger(db, camera_id, "bench"))
            time.sleep(0.12 + 0.1 * float(rng.random()))
        wait_for(
            lambda: (
                db.execute(
                    f"SELECT COUNT(*) FROM inspection_triggers WHERE status = 'pending' AND id IN ({','.join('?' * len(ids))})",
                    ids,
                ).fetchone()[0]
                == 0
            ),
            15,
            "every trigger answered",
        )
        process.writer.wait_idle(10)
        status = process.loops[camera_id].status()
    rows = db.execute(
        f"SELECT latencies FROM inspection_events WHERE trigger_id IN ({','.join('?' * len(ids))})", ids
    ).fetchall()
    db.conn.close()
    latencies = [json.loads(row[0]) for row in rows]
    assert status.genicam is not None
    return {
        "total_ms": [lat["total_ms"] for lat in latencies],
        "to_frame_ms": [lat["trigger_to_frame_ms"] for lat in latencies],
        "sent": len(ids),
        "transport": status.genicam.transport,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (well under a minute)")
    parser.add_argument(
        "--address", help="run the simulator on this address (default: a loopback address of its own)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "appliance-bench-camera",
        help="folder for the exported model, shared with bench/camera.py",
    )  # fmt: skip
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 30.0
    count = 20 if args.quick else 200
    results: dict[str, Any] = {"simulator_fps": SIMULATOR_FPS, "imgsz": IMGSZ, "frame": "512x512 Mono8"}
    onnx = make_onnx(args.cache, IMGSZ)
    alone = ModelAlone(load_detector(onnx, class_names=[f"c{i}" for i in range(80)], imgsz=IMGSZ))
    alone.burst(3.0 if args.quick else 10.0)
    model = alone.figures()
    alone.detector.close()
    results.update(model_only_fps=round(model["model_fps"], 2), model_ms=round(model["model_ms"], 2))
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        work = Path(tmp)
        with simulator(work, args.address) as sim:
            run = free_run(work, onnx, sim.source, seconds)
            ratio = run["delivered_fps"] / SIMULATOR_FPS
            print(f"free run: {json.dumps({**run, 'transport': str(run['transport'])})}", file=sys.stderr)
            trig = software_trigger(work, onnx, sim.source, count)
            print(
                f"software trigger: {json.dumps({**trig, 'transport': str(trig['transport'])})}",
                file=sys.stderr,
            )
    total = trig["total_ms"] or [float("nan")]
    to_frame = trig["to_frame_ms"] or [float("nan")]
    lost = [lost_per_1000(run["transport"]), lost_per_1000(trig["transport"])]
    results.update(
        gige_free_run_delivered_fps=round(run["delivered_fps"], 2),
        gige_free_run_delivered_ratio=round(ratio, 3),
        gige_free_run_model_keeps_up=model["model_fps"] > SIMULATOR_FPS,
        gige_free_run_frames_lost_per_1000=round(lost[0], 2),
        gige_trigger_to_verdict_p50_ms=round(statistics.median(total), 1),
        gige_trigger_to_verdict_p99_ms=round(percentile(total, 0.99), 1),
        gige_trigger_to_frame_p50_ms=round(statistics.median(to_frame), 1),
        gige_trigger_over_model_p50=round(statistics.median(total) / model["model_ms"], 2),
        gige_triggers_answered=f"{len(trig['total_ms'])}/{trig['sent']}",
        gige_trigger_frames_lost_per_1000=round(lost[1], 2),
        gige_frames_lost_per_1000=round(max(lost), 2),
    )
    results["free_run_target_met"] = ratio >= 0.95 or not results["gige_free_run_model_keeps_up"]
    results["lost_target_met"] = results["gige_frames_lost_per_1000"] == 0
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
