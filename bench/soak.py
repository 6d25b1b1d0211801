"""A month on the line, compressed: the whole box (`appliance run`) for `--minutes`, sampled as it goes.

    .venv/bin/python bench/soak.py [--quick] [--minutes M] [--cameras N] [--events-mb MB]

What runs, all on loopback: `appliance run` (web, worker, camera, outputs) on a fresh data folder with the
colour detector of the stations tests deployed; N cameras (default 2) on looping video files in interval mode
(one inspection every 0.2 s each, snapshots on); an MQTT output to a real Mosquitto with a persistent subscriber,
and a signed webhook output to a receiver; one viewer holding the MJPEG stream of camera 1 open; the console's
polling every 2 s (events, counters, camera and output status, system). Retention limits are small
(`events_max_mb`, default 200, `--quick` 20) so that retention runs many times within the run.

Every `--sample-s` seconds: each process's RSS, open file descriptors and threads (found as the children of
`appliance run`, a restart counted), the catalog and WAL sizes, the events folder's size, events written
(the newest event id), kept and pruned. At the end the cameras stop, the outputs drain, and every event id
is looked for at the subscriber and the receiver.

The last line is one JSON object: minutes, events_written, events_lost (per output, summed; goal 0),
events_duplicated (goal 0), retention_runs (> 0), events_dir_mb_max (<= the limit plus one retention step),
rss_slope_mb_per_h and fd_slope_per_h per process over the second half of the run (goal: flat within 1 MB/h
and 0 fds/h after warm-up), catalog_mb_max and wal_mb_max, restarts, errors_logged, and the samples' summary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from appliance.caller import CurrentUser  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database  # noqa: E402
from appliance.outputs import service as outputs_service  # noqa: E402
from appliance.outputs.schemas import MqttSettings, OutputWrite, WebhookSettings  # noqa: E402
from appliance.stations import cameras  # noqa: E402
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule  # noqa: E402
from tests.camera_sources import build_colour_onnx, deploy_model, write_scenes  # noqa: E402
from tests.helpers import API, admin_setup, auth, free_port  # noqa: E402
from tests.line_peers import Mosquitto, Subscriber, WebhookReceiver  # noqa: E402
from tests.workers import wait_for  # noqa: E402

ADMIN = CurrentUser(id=1, username="bench", role="admin", token_id="bench")
BOX = "soak-box"
RULE = Rule(name="two squares", classes=["square"], condition="==", count=2, min_confidence=0.5)
SCENES = [(8, [(1, 1), (1, 3)], []), (8, [(1, 1)], [])]
PROCESSES = ("web", "worker", "camera", "outputs")
COMMAND_OF = {"serve": "web", "worker": "worker", "camera": "camera", "outputs": "outputs"}
HOOK_KEY = "soak-webhook-key-0123456789"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600


def settled(points: list[tuple[float, float]], window_s: float = 60.0) -> list[tuple[float, float]]:
    """The lowest value of each window: a file held open for a moment (a snapshot being written, a request
    in flight) is not a leak, a descriptor that stays is."""
    windows: dict[int, tuple[float, float]] = {}
    for t, v in points:
        key = int(t // window_s)
        if key not in windows or v < windows[key][1]:
            windows[key] = (t, v)
    return [windows[k] for k in sorted(windows)]


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def file_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1e6
    except OSError:
        return 0.0


class Box:
    """`appliance run` and its four children, found by their command; a new pid is a restart."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(config_path), "run"],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")},
            start_new_session=True,
        )
        self.pids: dict[str, int] = {}
        self.restarts = 0

    def children(self) -> dict[str, psutil.Process]:
        found: dict[str, psutil.Process] = {}
        try:
            for child in psutil.Process(self.process.pid).children():
                try:
                    argv = child.cmdline()
                except psutil.Error:
                    continue
                name = COMMAND_OF.get(next((a for a in argv if a in COMMAND_OF), ""), "")
                if name:
                    found[name] = child
        except psutil.Error:
            return found
        for name, child in found.items():
            if name in self.pids and self.pids[name] != child.pid:
                self.restarts += 1
            self.pids[name] = child.pid
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


class Console:
    """What an open console does: the Live page's polling every 2 s and one MJPEG stream held open."""

    def __init__(self, base: str, headers: dict[str, str], camera_ids: list[int]) -> None:
        self.base = base
        self.headers = headers
        self.camera_ids = camera_ids
        self.stop = threading.Event()
        self.polls = 0
        self.poll_errors: collections.Counter[str] = collections.Counter()
        self.stream_bytes = 0
        self.stream_restarts = 0

    def poll(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as http:
            while not self.stop.wait(2.0):
                since = time.time() - 8 * 3600
                paths = [
                    f"{API}/events?limit=50",
                    f"{API}/events/counters?since={since}",
                    f"{API}/cameras/status",
                    f"{API}/outputs",
                    f"{API}/system",
                ]
                for path in paths:
                    try:
                        status = http.get(path).status_code
                    except httpx.HTTPError as exc:
                        self.poll_errors[type(exc).__name__] += 1
                        continue
                    if status != 200:
                        self.poll_errors[f"{path.split('?')[0]} {status}"] += 1
                self.polls += 1

    def stream(self) -> None:
        while not self.stop.is_set():
            try:
                with (
                    httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as http,
                    http.stream("GET", f"{API}/cameras/{self.camera_ids[0]}/stream") as response,
                ):
                    for chunk in response.iter_bytes():
                        self.stream_bytes += len(chunk)
                        if self.stop.is_set():
                            return
            except httpx.HTTPError:
                pass
            self.stream_restarts += 1
            self.stop.wait(1.0)

    def start(self) -> Console:
        for target in (self.poll, self.stream):
            threading.Thread(target=target, daemon=True).start()
        return self


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 minutes, a 20 MB events budget")
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--events-mb", type=int, default=0)
    parser.add_argument("--sample-s", type=float, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the data folder, samples.json and run.log")
    args = parser.parse_args()
    minutes = args.minutes or (10 if args.quick else 120)
    events_mb = args.events_mb or (20 if args.quick else 200)
    sample_s = args.sample_s or (5 if minutes <= 15 else 30)

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    port = free_port()
    config_path = work / "appliance.toml"
    config_path.write_text(
        "\n".join(
            [
                f'data_dir = "{work / "data"}"',
                f'runtime_dir = "{work / "run"}"',
                'host = "127.0.0.1"',
                f"port = {port}",
                f'box_id = "{BOX}"',
                f"events_max_mb = {events_mb}",
            ]
        )
        + "\n"
    )
    config = load_config(config_path, env={})
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, build_colour_onnx(work / "model_64.onnx"), None, "colour")
    camera_ids = []
    for n in range(args.cameras):
        video = write_scenes(work / f"line{n}.avi", SCENES, fps=15)
        settings = CameraSettings(
            source=str(video), confidence=0.5, rules=[RULE], mode="interval", interval_s=0.2, snapshots=True
        )
        row = cameras.create_camera(db, CameraWrite(name=f"line {n}", enabled=True, settings=settings), ADMIN)
        camera_ids.append(row.id)

    broker = Mosquitto(work / "broker", persistent=True).start()
    subscriber = Subscriber(
        broker.port, [f"appliance/{BOX}/cameras/+/events"], client_id="soak-line", persistent=True
    ).start()
    receiver = WebhookReceiver(HOOK_KEY).start()
    mqtt_id = outputs_service.create_output(
        db,
        config,
        OutputWrite(name="broker", settings=MqttSettings(host="127.0.0.1", port=broker.port)),
        ADMIN,
    ).id
    hook_id = outputs_service.create_output(
        db,
        config,
        OutputWrite(name="mes", settings=WebhookSettings(url=receiver.url, secret=HOOK_KEY)),
        ADMIN,
    ).id

    box = Box(config_path, work / "run.log")
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=30)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"quick": args.quick}
    try:
        wait_for(lambda: _ready(http), timeout=120, what="the web process")
        token = http.post(f"{API}/auth/setup", json=admin_setup(config.db_path)).json()["access_token"]
        headers = auth(token)
        console = Console(base, headers, camera_ids).start()
        started = time.monotonic()
        deadline = started + minutes * 60
        while True:
            samples.append(sample(box, config, db, time.monotonic() - started))
            if time.monotonic() >= deadline:
                break
            time.sleep(min(sample_s, max(0.0, deadline - time.monotonic())))
        console.stop.set()

        for camera_id in camera_ids:
            http.post(f"{API}/cameras/{camera_id}/stop", headers=headers)
        time.sleep(3)  # the last inspections reach the writer and the outbox
        written = _newest_event(db)

        def drained() -> bool:
            outputs = {o["id"]: o for o in http.get(f"{API}/outputs", headers=headers).json()}
            return all(
                (outputs[i]["status"]["last_event_id"] or 0) >= written
                and outputs[i]["status"]["backlog"] == 0
                for i in (mqtt_id, hook_id)
            )

        wait_for(drained, timeout=300, what="the outputs drained", interval=1.0)
        time.sleep(2)
        mqtt_ids = collections.Counter(e["event_id"] for e in subscriber.events())
        with receiver.lock:
            hook_ids = collections.Counter(json.loads(r["body"])["event_id"] for r in receiver.received)
        expected = set(range(1, written + 1))
        lost = {"mqtt": len(expected - set(mqtt_ids)), "webhook": len(expected - set(hook_ids))}
        duplicated = {
            "mqtt": sum(c - 1 for c in mqtt_ids.values() if c > 1),
            "webhook": sum(c - 1 for c in hook_ids.values() if c > 1),
        }
        log_text = (work / "run.log").read_text(errors="replace")
        second_half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
        result.update(
            {
                "minutes": round((samples[-1]["t"]) / 60, 1),
                "cameras": args.cameras,
                "events_max_mb": events_mb,
                "events_written": written,
                "events_kept": samples[-1]["events_kept"],
                "events_pruned": written - _kept(db),
                "events_lost": sum(lost.values()),
                "events_lost_per_output": lost,
                "events_duplicated": sum(duplicated.values()),
                "events_duplicated_per_output": duplicated,
                "retention_runs": len(re.findall(r"retention removed \d+ events", log_text)),
                "events_dir_mb_max": round(max(s["events_dir_mb"] for s in samples), 1),
                "catalog_mb_max": round(max(s["catalog_mb"] for s in samples), 1),
                "wal_mb_max": round(max(s["wal_mb"] for s in samples), 1),
                "rss_slope_mb_per_h": {
                    p: round(
                        slope_per_hour([(s["t"], s["rss_mb"][p]) for s in second_half if p in s["rss_mb"]]), 2
                    )
                    for p in PROCESSES
                },
                "fd_slope_per_h": {
                    p: round(
                        slope_per_hour(
                            settled([(s["t"], s["fds"][p]) for s in second_half if p in s["fds"]])
                        ),
                        2,
                    )
                    for p in PROCESSES
                },
                "rss_mb_first_last": {
                    p: [samples[0]["rss_mb"].get(p), samples[-1]["rss_mb"].get(p)] for p in PROCESSES
                },
                "threads_first_last": {
                    p: [samples[0]["threads"].get(p), samples[-1]["threads"].get(p)] for p in PROCESSES
                },
                "restarts": box.restarts,
                "errors_logged": len(re.findall(r"\b(ERROR|CRITICAL)\b|Traceback", log_text)),
                "console_polls": console.polls,
                "console_poll_errors": dict(console.poll_errors),
                "stream_mb": round(console.stream_bytes / 1e6, 1),
                "stream_restarts": console.stream_restarts,
                "samples": len(samples),
            }
        )
    finally:
        box.stop()
        subscriber.stop()
        receiver.stop()
        broker.stop()
        db.conn.close()
        http.close()
        if args.keep:
            (work / "samples.json").write_text(json.dumps(samples))
            print(f"kept {work} (samples.json, run.log)", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get(f"{API}/health").status_code == 200
    except httpx.HTTPError:
        return False


def _newest_event(db: Any) -> int:
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM inspection_events").fetchone()[0])


def _kept(db: Any) -> int:
    return int(db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0])


def sample(box: Box, config: Any, db: Any, t: float) -> dict[str, Any]:
    rss, fds, threads = {}, {}, {}
    for name, process in box.children().items():
        try:
            with process.oneshot():
                rss[name] = round(process.memory_info().rss / 1e6, 2)
                fds[name] = process.num_fds()
                threads[name] = process.num_threads()
        except psutil.Error:
            continue
    return {
        "t": round(t, 1),
        "rss_mb": rss,
        "fds": fds,
        "threads": threads,
        "catalog_mb": file_mb(config.db_path),
        "wal_mb": file_mb(config.db_path.with_name(config.db_path.name + "-wal")),
        "events_dir_mb": folder_bytes(config.data_path / "events") / 1e6,
        "events_written": _newest_event(db),
        "events_kept": _kept(db),
    }


if __name__ == "__main__":
    sys.exit(main())
