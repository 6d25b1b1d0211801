"""Inspection stations benchmark: 1, 2 and 4 file-source cameras at 15 fps sharing the 320 px model.

Same run, same machine state: first the model alone (Detector.detect back to back on a camera frame: the
model-only FPS), then the camera process (`CameraProcess`, the code `appliance camera` runs) with N cameras
in interval mode (an inspection event with its snapshot every 0.2 s per camera) while triggers are sent to
camera 1 through the catalog, as the HTTP route does. Figures per N:

- per-camera delivered FPS against its ceiling, min(source FPS, model-only FPS / N): target >= 0.9 when
  model-bound; fairness, slowest camera / fastest: target >= 0.8;
- trigger -> verdict latency (the request's monotonic time to the verdict of the first newer frame), median
  and p99: target p99 <= 1 source period + 1.5 model times;
- events handed off vs written (none lost), and the writer alone: events with 640x480 snapshots per second;
- shadow mode: one camera in continuous mode (every frame offered to the candidate) with and without a slow
  candidate shadowing it (the same network exported at 640 px, about 4x the work), alone and shadowed runs
  alternating: `shadow_delivered_ratio` (delivered FPS shadowed / alone, target >= 0.95) and
  `shadow_trigger_p99_ratio` (trigger -> verdict p99 shadowed / alone, target <= 1.05), with how many
  inspections the candidate judged and skipped.
- `batched_vs_single_aggregate_fps_4`: 4 cameras fed faster than the model can go (120 fps files), the sum of
  their delivered FPS with batching forced on (batch_min_gain 0) over the same with one frame per call
  (batch_max 1). On a CPU a batch is barely cheaper per frame than single ones, so it stays near 1 (and the
  box leaves batching off by itself); on a GPU it is the point.

The model is yolov8n (random weights: its speed is the architecture's) exported by the export job's code
(bench/camera.py's cache folder is reused). The last line is one JSON object.
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

import cv2  # noqa: E402
import msgspec  # noqa: E402

from appliance.camera.runner import CameraProcess  # noqa: E402
from appliance.camera.writer import EventWriter  # noqa: E402
from appliance.clock import now_iso  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database, write_transaction  # noqa: E402
from appliance.inference.pipeline import load_detector  # noqa: E402
from appliance.shadow.schemas import ShadowStart  # noqa: E402
from appliance.shadow.service import read_status as read_shadow_status  # noqa: E402
from appliance.shadow.service import start_shadow  # noqa: E402
from appliance.stations import triggers  # noqa: E402
from appliance.stations.contracts import InspectionEvent, Mode  # noqa: E402
from appliance.stations.schemas import CameraSettings, Rule  # noqa: E402
from bench.camera import (  # noqa: E402
    BENCH_ADMIN,
    FRAME_H,
    FRAME_W,
    ModelAlone,
    add_camera,
    camera_frames,
    make_onnx,
    register_model,
)

SOURCE_FPS = 15.0
IMGSZ = 320
CANDIDATE_IMGSZ = 640  # the shadowed candidate: the same network at 4x the pixels


def write_source(path: Path) -> Path:
    """A 640x480 MJPG file of 30 camera-like frames, played at 15 fps by the file source."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), SOURCE_FPS, (FRAME_W, FRAME_H))
    for jpeg in camera_frames(30):
        writer.write(cv2.imdecode(__import__("numpy").frombuffer(jpeg, "uint8"), cv2.IMREAD_COLOR))
    writer.release()
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run_cameras(
    work: Path,
    onnx: Path,
    video: Path,
    n: int,
    seconds: float,
    n_triggers: int,
    *,
    tag: str = "",
    mode: Mode = "interval",
    candidate: Path | None = None,
    source_fps: float = 0.0,
    **config_overrides: Any,
) -> dict[str, Any]:
    """N cameras on `video` (at `source_fps`, 0: the file's); with `candidate`, a slower model shadows camera 1
    (it is up before measuring)."""
    config = load_config(env={}, data_dir=str(work / f"data-{n}{tag}"), **config_overrides)
    candidate_id = register_model(config, candidate, CANDIDATE_IMGSZ) if candidate is not None else None
    register_model(config, onnx, IMGSZ)  # registered last: the deployed one
    db = open_database(config.db_path)
    rule = Rule(name="anything", condition=">=", count=0)
    ids = [
        add_camera(
            db,
            f"cam{i}",
            CameraSettings(
                source_type="file", source=str(video), fps=source_fps, mode=mode, interval_s=0.2, rules=[rule]
            ),
        )  # fmt: skip
        for i in range(n)
    ]
    if candidate_id is not None:
        with write_transaction(db):  # the admin who starts the shadow (recorded with it)
            db.execute(
                "INSERT OR IGNORE INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, 'x', 'admin', ?)",
                [BENCH_ADMIN.id, BENCH_ADMIN.username, now_iso()],
            )
        start_shadow(db, config, ids[0], ShadowStart(model_id=candidate_id, window=10), BENCH_ADMIN)
    process = CameraProcess(config)
    thread = threading.Thread(target=process.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while (
        len(process.loops) < n
        or any(loop.model_id is None for loop in process.loops.values())
        or (candidate_id is not None and _shadow_state(config, ids[0]) != "running")
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the cameras never ran with the model (and the candidate)")
        time.sleep(0.05)
    time.sleep(1.5)  # warm-up
    loops = [process.loops[i] for i in ids]
    before = [loop.published for loop in loops]
    started = time.monotonic()
    trigger_ids: list[int] = []
    for _ in range(n_triggers):  # over the first 80 % of the window, at times unrelated to the frames
        time.sleep(0.8 * seconds / n_triggers * (0.6 + 0.8 * (len(trigger_ids) % 5) / 4))
        trigger_ids.append(triggers.request_trigger(db, ids[0], "bench"))
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    delivered = [(loop.published - b) / elapsed for loop, b in zip(loops, before, strict=True)]
    shadow = read_shadow_status(config.runtime_path, ids[0]) if candidate_id is not None else None
    batching = next((m.runner.policy.note for m in process.models.loaded.values()), "")
    process.stop.set()
    thread.join(30)
    handed = sum(loop.events for loop in loops)  # after the loops stopped: every event handed off
    written = db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0]
    latencies = (
        [
            json.loads(row[0])["total_ms"]
            for row in db.execute(
                f"SELECT latencies FROM inspection_events WHERE trigger_id IN ({','.join('?' * len(trigger_ids))})",
                trigger_ids,
            )
        ]
        if trigger_ids
        else []
    )
    model_ms = [loop.stats.values["inference"] for loop in loops]
    batches = [loop.batches.summary() for loop in loops]
    db.conn.close()
    return {
        "batch_sizes": batches,
        "batching": batching,
        "delivered": delivered,
        "trigger_ms": latencies,
        "triggers_sent": len(trigger_ids),
        "events_handed_off": handed,
        "events_written": written,
        "events_dropped": process.writer.stats.events_dropped,
        "snapshots_dropped": process.writer.stats.snapshots_dropped,
        "inference_ms_in_loop": statistics.median(v for values in model_ms for v in values),
        "shadow": msgspec.to_builtins(shadow) if shadow is not None else None,
    }


def _shadow_state(config: Any, camera_id: int) -> str | None:
    status = read_shadow_status(config.runtime_path, camera_id)
    return status.state if status is not None else None


def shadow_figures(
    work: Path, onnx: Path, candidate: Path, video: Path, seconds: float, n_triggers: int, rounds: int
) -> dict[str, Any]:
    """One camera alone and shadowed by the slow candidate, alternating; ratios of the pooled figures."""
    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "shadowed": []}
    for r in range(rounds):
        for kind in ("alone", "shadowed"):
            runs[kind].append(
                run_cameras(
                    work, onnx, video, 1, seconds, n_triggers, tag=f"-{kind}-{r}", mode="continuous",
                    candidate=candidate if kind == "shadowed" else None,
                )
            )  # fmt: skip
    fps = {k: statistics.mean(run["delivered"][0] for run in v) for k, v in runs.items()}
    p99 = {k: percentile([ms for run in v for ms in run["trigger_ms"]], 0.99) for k, v in runs.items()}
    median = {k: statistics.median([ms for run in v for ms in run["trigger_ms"]]) for k, v in runs.items()}
    judged = [run["shadow"] for run in runs["shadowed"] if run["shadow"]]
    return {
        "shadow_delivered_ratio": round(fps["shadowed"] / fps["alone"], 3),
        "shadow_trigger_p99_ratio": round(p99["shadowed"] / p99["alone"], 3),
        "shadow_delivered_fps": [round(fps["alone"], 2), round(fps["shadowed"], 2)],
        "shadow_trigger_p99_ms": [round(p99["alone"], 1), round(p99["shadowed"], 1)],
        "shadow_trigger_median_ms": [round(median["alone"], 1), round(median["shadowed"], 1)],
        "shadow_candidate_imgsz": CANDIDATE_IMGSZ,
        "shadow_candidate_ms": [s["candidate_ms"] for s in judged],
        "shadow_inspections_judged": sum(s["shadowed"] for s in judged),
        "shadow_inspections_skipped": sum(s["skipped"] for s in judged),
    }


def writer_rate(work: Path, count: int) -> dict[str, Any]:
    """The event writer alone: `count` events with a 640x480 snapshot each, submitted at once."""
    config = load_config(env={}, data_dir=str(work / "data-writer"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    jpeg = camera_frames(1)[0]
    writer = EventWriter(config).start()
    started = time.monotonic()
    accepted = sum(
        writer.submit(InspectionEvent(camera_id=1, ts=time.time(), mode="continuous", verdict="ok"), jpeg)
        for _ in range(count)
    )
    writer.wait_idle(300)
    elapsed = time.monotonic() - started
    writer.close()
    written = db.execute("SELECT COUNT(*), COUNT(snapshot) FROM inspection_events").fetchone()
    db.conn.close()
    return {
        "accepted": accepted,
        "written": written[0],
        "with_snapshot": written[1],
        "per_s": count / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute in all)")
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "appliance-bench-camera",
        help="folder for the exported model, shared with bench/camera.py",
    )  # fmt: skip
    args = parser.parse_args()
    seconds = 6.0 if args.quick else 20.0
    n_triggers = 12 if args.quick else 60
    results: dict[str, Any] = {
        "source_fps": SOURCE_FPS,
        "imgsz": IMGSZ,
        "frame_w": FRAME_W,
        "frame_h": FRAME_H,
    }
    onnx = make_onnx(args.cache, IMGSZ)
    with tempfile.TemporaryDirectory(prefix="bench-stations-") as tmp:
        work = Path(tmp)
        video = write_source(work / "line.avi")
        alone = ModelAlone(load_detector(onnx, class_names=[f"c{i}" for i in range(80)], imgsz=IMGSZ))
        alone.burst(3.0 if args.quick else 10.0)
        model = alone.figures()
        alone.detector.close()
        results.update(model_only_fps=round(model["model_fps"], 2), model_ms=round(model["model_ms"], 2))
        period_ms = 1000 / SOURCE_FPS
        for n in [int(c) for c in args.cameras.split(",")]:
            m = run_cameras(work, onnx, video, n, seconds, n_triggers)
            ceiling = min(SOURCE_FPS, model["model_fps"] / n)
            lat = m["trigger_ms"] or [float("nan")]
            budget = period_ms + 1.5 * model["model_ms"]
            row = {
                "delivered_fps": [round(d, 2) for d in m["delivered"]],
                "ceiling_fps": round(ceiling, 2),
                "model_bound": model["model_fps"] / n < SOURCE_FPS,
                "delivered_ratio_min": round(min(m["delivered"]) / ceiling, 3),
                "fairness": round(min(m["delivered"]) / max(m["delivered"]), 3),
                "trigger_to_verdict_median_ms": round(statistics.median(lat), 1),
                "trigger_to_verdict_p99_ms": round(percentile(lat, 0.99), 1),
                "trigger_budget_ms": round(budget, 1),
                "triggers_answered": f"{len(m['trigger_ms'])}/{m['triggers_sent']}",
                "events_handed_off": m["events_handed_off"],
                "events_written": m["events_written"],
                "events_lost": m["events_dropped"] + m["events_handed_off"] - m["events_written"],
                "inference_ms_in_loop": round(m["inference_ms_in_loop"], 2),
            }
            row["fps_target_met"] = row["delivered_ratio_min"] >= 0.9  # ceiling: source or model / N
            row["fairness_target_met"] = row["fairness"] >= 0.8
            row["latency_target_met"] = row["trigger_to_verdict_p99_ms"] <= budget
            print(f"{n} camera(s): {json.dumps(row)}", file=sys.stderr)
            for key, value in row.items():
                results[f"{key}_{n}cam"] = value
        # Batching across cameras: 4 cameras faster than the model, batches forced on, then one frame per call.
        forced = run_cameras(
            work, onnx, video, 4, seconds, 0, tag="-batched", source_fps=120.0, batch_min_gain=0.0
        )
        single = run_cameras(work, onnx, video, 4, seconds, 0, tag="-single", source_fps=120.0, batch_max=1)
        results.update(
            batched_vs_single_aggregate_fps_4=round(sum(forced["delivered"]) / sum(single["delivered"]), 3),
            batched_aggregate_fps_4=round(sum(forced["delivered"]), 2),
            single_aggregate_fps_4=round(sum(single["delivered"]), 2),
            batched_batch_sizes_4=forced["batch_sizes"],
            batching_policy_4cam=m["batching"],  # what the box chose by itself in the 4-camera run above
        )
        print(f"batched vs single: {forced['batching']}; {forced['batch_sizes']}", file=sys.stderr)
        candidate = make_onnx(args.cache, CANDIDATE_IMGSZ)
        # A p99 needs ~100 triggers per side to be more than the slowest of a few (24 swung 0.98-1.24).
        shadowed = shadow_figures(
            work, onnx, candidate, video, 10.0 if args.quick else 20.0, 30 if args.quick else 60,
            rounds=3 if args.quick else 4,
        )  # fmt: skip
        print(f"shadow: {json.dumps(shadowed)}", file=sys.stderr)
        results.update(shadowed)
        w = writer_rate(work, 500 if args.quick else 3000)
        print(f"writer: {json.dumps(w)}", file=sys.stderr)
        results.update(
            writer_events_per_s=round(w["per_s"], 1),
            writer_events_lost=w["accepted"] - w["written"],
            writer_snapshots_kept=w["with_snapshot"],
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
