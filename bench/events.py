"""Events benchmark: the event list, the counters and the shift report at millions of events, and the
retention pruning a million of them while a camera keeps writing.

    .venv/bin/python bench/events.py [--quick] [--events N] [--prune N] [--repeat N] [--no-browser]

Seeds N events (default 10,000,000; --quick 1,000,000) through the catalog's own writer
(`stations.events.record_events`, the camera process's batch path, batches of 5,000): 4 cameras with rules,
10 events a second in all (the issue's "12 days of a busy line" at 10 M), 2 % NG failing one or two of 4
rules, small detections; 1 in 20 of the oldest `--prune` events has a snapshot file. Then, against a real
`appliance serve` over HTTP (p99 of `--repeat` requests each):

- `list_p99_ms`: the worst of the Events page's filters (latest, camera, verdict, camera + verdict, rule,
  camera + rule, the last hour, a one-hour and a one-day window days back, a second page);
- `counters_shift_p99_ms` / `counters_day_p99_ms` (all cameras since the start of the 8-hour shift / the
  day), `counters_week_p99_ms` (one camera over 7 days), `report_day_p99_ms` (the report of today, hourly);
- baseline in the same run: GET /health, and the day's counters counted from the rows as before (in-process);
- `counts_equal_recount`: counts of shift, day, week and random unaligned ranges (per camera and per failing
  rule) equal a recount of the rows, before and after the prune (for ranges the rows still cover), and the
  pruned history still counts what it counted before;
- `prune_writer_max_wait_ms`: the longest `record_events` call of a writer thread (one event every 25 ms, the
  camera process's rate at 4 cameras x 10/s) while the retention (`retention.Pruner`, the camera process's
  code) removes the oldest `--prune` events (default 1,000,000; --quick 500,000) and their snapshots;
  baseline: the same writer alone. Then the same number of events is written again: the file reuses the
  freed pages (`file_growth_after_refill_pct`);
- `events_page_first_paint_ms`: a cold Chromium (Debian's) from navigation to the first rows and the report
  chart drawn (skipped without Chromium or with --no-browser).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from appliance.config import load_config  # noqa: E402
from appliance.db import Database, migrate, open_database  # noqa: E402
from appliance.inference.pipeline import Detection  # noqa: E402
from appliance.stations import counts, events, retention  # noqa: E402
from appliance.stations.contracts import InspectionEvent  # noqa: E402
from bench.catalog import summary, timed  # noqa: E402
from tests.helpers import ADMIN, API, ServerProcess, auth  # noqa: E402

CAMERAS = 4
RATE = 10.0  # events per second, all cameras together
NG_SHARE = 0.02
RULES = ["two screws", "label present", "no scratch", "gasket seated"]
RULE_WEIGHTS = [50, 25, 15, 10]
SEED_BATCH = 5000
SNAPSHOT_EVERY = 20
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def add_cameras(db: Database) -> list[int]:
    rules = [{"name": name, "condition": "present"} for name in RULES]
    settings = json.dumps({"source_type": "file", "source": "/media/usb/line.avi", "rules": rules})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with db.conn:
        for n in range(CAMERAS):
            db.execute(
                "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES (?, 0, ?, ?, ?)",
                [f"press {n + 1}", settings, now, now],
            )
    return [r[0] for r in db.execute("SELECT id FROM cameras ORDER BY id")]


def make_event(rng: random.Random, camera_id: int, ts: float) -> InspectionEvent:
    ng = rng.random() < NG_SHARE
    failing = sorted(set(rng.choices(RULES, RULE_WEIGHTS, k=rng.choice((1, 1, 2))))) if ng else []
    boxes = [
        Detection(
            class_id=0,
            class_name="screw",
            confidence=0.91,
            x1=120.0 + 40 * k,
            y1=80.0,
            x2=150.0 + 40 * k,
            y2=110.0,
        )
        for k in range(1 if ng else 2)
    ]
    return InspectionEvent(
        camera_id=camera_id,
        ts=ts,
        mode="interval",
        verdict="ng" if ng else "ok",
        failing_rules=failing,
        counts={"*": {"screw": len(boxes)}},
        detections=boxes,
        model_id=1,
        latencies={"inference_ms": 12.5, "total_ms": 18.0},
        width=1280,
        height=960,
    )


def seed(
    db: Database, data_path: Path, cameras: list[int], first: int, n: int, end_ts: float, snapshots_below: int
) -> float:
    """Events number first..first+n-1 of a history ending at end_ts; returns the events per second."""
    rng = random.Random(first)
    jpeg = b"\xff\xd8" + bytes(2046)  # the bytes do not matter to the retention, their count does
    started = time.perf_counter()
    batch: list[InspectionEvent] = []
    db.execute("PRAGMA synchronous = OFF")  # seeding only; the measured connections use FULL
    total = first + n
    for k in range(first, total):
        ts = end_ts - (total - k) / RATE
        event = make_event(rng, cameras[k % len(cameras)], ts)
        if k < snapshots_below and k % SNAPSHOT_EVERY == 0:
            rel = retention.snapshot_relpath(event.camera_id, ts, k)
            path = retention.events_root(data_path) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg)
            event.snapshot, event.snapshot_bytes = rel, len(jpeg)
        batch.append(event)
        if len(batch) == SEED_BATCH:
            events.record_events(db, batch)
            batch = []
            done = k + 1 - first
            if done % 500_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  seeded {done:,} events ({rate:,.0f}/s)", file=sys.stderr)
    if batch:
        events.record_events(db, batch)
    db.execute("PRAGMA synchronous = FULL")
    return n / (time.perf_counter() - started)


def local_midnight(now: float) -> float:
    day = time.localtime(now)
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))


def http_figures(server: ServerProcess, token: str, now: float, oldest: float, repeat: int) -> dict[str, Any]:
    base = f"{server.url}{API}"
    shift_start = now - (now - local_midnight(now)) % (8 * 3600)
    midnight = local_midnight(now)
    back = max(oldest + 3600, now - 3 * 86_400)  # a window days back (or as far back as the history goes)
    with httpx.Client(headers=auth(token), timeout=60) as client:
        page = client.get(f"{base}/events", params={"limit": 50}).json()
        second = {"before_id": page["next_before_id"], "before_ts": page["next_before_ts"]}

        def get(path: str, **params: Any) -> Callable[[], Any]:
            return lambda: client.get(f"{base}{path}", params=params).raise_for_status()

        lists = {
            "latest": get("/events"),
            "camera": get("/events", camera_id=2),
            "verdict": get("/events", verdict="ng"),
            "camera_verdict": get("/events", camera_id=3, verdict="ng"),
            "rule": get("/events", rule=RULES[3]),
            "camera_rule": get("/events", camera_id=1, rule=RULES[2]),
            "last_hour": get("/events", since=now - 3600),
            "hour_window_back": get("/events", since=back, until=back + 3600),
            "day_window_back": get("/events", since=back - 86_400, until=back),
            "camera_ng_day_back": get("/events", camera_id=4, verdict="ng", since=back - 86_400, until=back),
            "second_page": get("/events", **second),
        }
        figures: dict[str, Any] = {"health": summary(timed(get("/health"), repeat))}
        figures["list"] = {name: summary(timed(fn, repeat)) for name, fn in lists.items()}
        figures["counters_shift"] = summary(timed(get("/events/counters", since=shift_start), repeat))
        figures["counters_day"] = summary(timed(get("/events/counters", since=midnight), repeat))
        figures["counters_week"] = summary(
            timed(get("/events/counters", since=now - 7 * 86_400, camera_id=1), repeat)
        )
        figures["report_day"] = summary(
            timed(get("/events/report", since=midnight, until=midnight + 86_400, bucket="hour"), repeat)
        )
    return figures


def recount(
    db: Database, since: float, until: float
) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, str], int]]:
    tallies = {
        camera: (ok, ng)
        for camera, ok, ng in db.execute(
            "SELECT camera_id, SUM(verdict = 'ok'), SUM(verdict = 'ng') FROM inspection_events "
            "WHERE ts >= ? AND ts < ? GROUP BY camera_id",
            [since, until],
        )
    }
    rules = {
        (camera, rule): n
        for camera, rule, n in db.execute(
            "SELECT e.camera_id, j.value, COUNT(DISTINCT e.id) FROM inspection_events e, json_each(e.failing_rules) j "
            "WHERE e.verdict = 'ng' AND e.ts >= ? AND e.ts < ? GROUP BY 1, 2",
            [since, until],
        )
    }
    return tallies, rules


def counted(
    db: Database, since: float, until: float
) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, str], int], bool]:
    found = counts.range_counts(db, since, until, rules=True)
    tallies = {camera: (t.ok, t.ng) for camera, t in found.cameras.items() if t.ok or t.ng}
    return tallies, {k: v for k, v in found.rules.items() if v}, found.exact


def ranges(rng: random.Random, now: float, oldest: float, n: int) -> list[tuple[float, float]]:
    midnight = local_midnight(now)
    out = [(now - (now - midnight) % (8 * 3600), now + 1), (midnight, now + 1), (now - 7 * 86_400, now + 1)]
    for _ in range(n):
        since = rng.uniform(oldest, now)
        out.append((since, min(now + 1, since + rng.uniform(1, 86_400))))
    return out


def compare(db: Database, spans: list[tuple[float, float]]) -> tuple[bool, list[str]]:
    problems = []
    for since, until in spans:
        tallies, rules, exact = counted(db, since, until)
        expected = recount(db, since, until)
        if not exact or (tallies, rules) != expected:
            problems.append(f"[{since:.1f}, {until:.1f}) exact={exact}: {tallies} != {expected[0]}")
    return not problems, problems


def prune_while_writing(
    data: Path, cameras: list[int], keep: int, end_ts: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The camera process's retention (Pruner) and a writer thread on their own connections, as in the camera
    process; returns (figures while pruning, the writer alone for a few seconds)."""
    config = load_config(env={}, data_dir=str(data), events_max_count=keep, events_max_age_days=10_000.0)

    def writer(stop: threading.Event, waits: list[float], seconds: float | None = None) -> None:
        db = open_database(config.db_path)
        rng = random.Random(7)
        deadline = time.perf_counter() + seconds if seconds else None
        k = 0
        while not stop.is_set() and (deadline is None or time.perf_counter() < deadline):
            event = make_event(rng, cameras[k % len(cameras)], end_ts + k / 40)
            started = time.perf_counter()
            events.record_events(db, [event])
            waits.append((time.perf_counter() - started) * 1000)
            k += 1
            time.sleep(max(0.0, 0.025 - (time.perf_counter() - started)))
        db.conn.close()

    alone: list[float] = []
    writer(threading.Event(), alone, seconds=5.0)

    waits: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(stop, waits))
    pruner = retention.Pruner(config)
    db = open_database(config.db_path)
    before = retention.totals(db)[0]
    db.conn.close()
    thread.start()
    started = time.perf_counter()
    pruned = pruner.pass_now()  # what the camera process's retention thread does in one pass
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    return (
        {
            "pruned": pruned.events,
            "before": before,
            "transactions": pruned.transactions,
            "seconds": round(elapsed, 1),
            "rows_per_s": round(pruned.events / elapsed),
            "writes": len(waits),
            "writer_max_ms": round(max(waits), 2),
            "writer_p99_ms": round(percentile(waits, 0.99), 2),
            "writer_median_ms": round(statistics.median(waits), 2),
        },
        {"writes": len(alone), "max_ms": round(max(alone), 2), "p99_ms": round(percentile(alone, 0.99), 2)},
    )


def file_facts(db: Database) -> dict[str, float]:
    page = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return {"file_mb": round(pages * page / 2**20, 1), "free_mb": round(free * page / 2**20, 1)}


FIRST_PAINT = """async () => {
  const ready = () => document.querySelector('[data-testid=event-row]')
    && Number(document.querySelector('[data-testid=report-chart]')?.dataset.points || 0) > 0;
  const t0 = performance.now();
  while (!ready()) {
    if (performance.now() - t0 > 30000) {
      const error = document.querySelector('[data-testid=report-error]')?.textContent || '';
      throw new Error(`not drawn after 30 s at ${location.hash}: ${error || document.body.innerText.slice(0, 300)}`);
    }
    await new Promise((r) => requestAnimationFrame(r));
  }
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now();
}"""


def first_paint(server: ServerProcess, reps: int) -> dict[str, float] | None:
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    paints = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-quic"])
        for _ in range(reps):
            context = browser.new_context(viewport={"width": 1366, "height": 768})
            assert context.request.post(f"{server.url}{API}/auth/login", data=ADMIN).ok
            page = context.new_page()
            page.goto(f"{server.url}/#/events")
            paints.append(page.evaluate(FIRST_PAINT))
            context.close()
        browser.close()
    return summary(paints)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000,000 events, 500,000 pruned")
    parser.add_argument("--events", type=int, help="events seeded (default 10,000,000)")
    parser.add_argument("--prune", type=int, help="events the retention removes (default 1,000,000)")
    parser.add_argument("--repeat", type=int, help="requests per figure (default 200; --quick 60)")
    parser.add_argument("--ranges", type=int, default=20, help="random ranges compared with a recount")
    parser.add_argument("--no-browser", action="store_true", help="skip the first paint in Chromium")
    parser.add_argument("--keep", help="build the data folder here and keep it (default: a temporary one)")
    args = parser.parse_args()
    n = args.events or (1_000_000 if args.quick else 10_000_000)
    prune = args.prune or min(1_000_000 if not args.quick else 500_000, n // 2)
    repeat = args.repeat or (60 if args.quick else 200)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-events-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"events": n, "load_avg_1m_at_start": round(os.getloadavg()[0], 1)}
    server = ServerProcess(data)
    try:
        config = load_config(env={}, data_dir=str(data))
        db = open_database(config.db_path)
        migrate(db, config.db_path)
        cameras = add_cameras(db)
        now = time.time()
        started = time.perf_counter()
        results["seed_events_per_s"] = round(seed(db, data, cameras, 0, n, now, prune))
        results["seed_s"] = round(time.perf_counter() - started, 1)
        results["catalog"] = file_facts(db)
        oldest = now - n / RATE
        print(f"seeded {n:,} events in {results['seed_s']} s", file=sys.stderr)

        # Baseline: the day's counters by counting the rows, as /events/counters did before the counts.
        midnight = local_midnight(now)
        rowcount_sql = "SELECT camera_id, verdict, COUNT(*) FROM inspection_events WHERE ts >= ? GROUP BY camera_id, verdict"
        rowcount = timed(lambda: db.execute(rowcount_sql, [midnight]).fetchall(), 5, warmup=1)
        results["baseline_counters_day_rowcount_ms"] = round(statistics.median(rowcount), 1)

        server.start(timeout=120)
        token = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).json()["access_token"]
        figures = http_figures(server, token, now, oldest, repeat)
        results["list_p99_ms"] = max(f["p99_ms"] for f in figures["list"].values())
        for key in ("counters_shift", "counters_day", "counters_week", "report_day"):
            results[f"{key}_p99_ms"] = figures[key]["p99_ms"]
        results["baseline_health_p99_ms"] = figures["health"]["p99_ms"]
        results["counters_day_vs_rowcount"] = round(
            figures["counters_day"]["median_ms"] / results["baseline_counters_day_rowcount_ms"], 4
        )
        results["http"] = figures
        if not args.no_browser:
            results["events_page_first_paint"] = first_paint(server, 3 if args.quick else 5)
        server.stop()

        rng = random.Random(3)
        spans = ranges(rng, now, oldest, args.ranges)
        equal_before, problems = compare(db, spans)
        history_before = counted(
            db, counts.bucket_of(oldest, 60) + 600.0, counts.bucket_of(oldest, 60) + 7200.0
        )

        prune_figures, alone = prune_while_writing(data, cameras, n - prune, now)
        results["prune"] = prune_figures
        results["prune_writer_max_wait_ms"] = prune_figures["writer_max_ms"]
        results["baseline_writer_alone_max_ms"] = alone["max_ms"]
        print(f"pruned: {json.dumps(prune_figures)}", file=sys.stderr)

        cov = counts.coverage(db)
        after_spans = [
            (s, u) for s, u in ranges(rng, now, cov.rows_after + 1, args.ranges) if s > cov.rows_after
        ]
        equal_after, more = compare(db, after_spans)
        history_after = counted(
            db, counts.bucket_of(oldest, 60) + 600.0, counts.bucket_of(oldest, 60) + 7200.0
        )
        history_kept = history_before[:2] == history_after[:2] and history_after[2]
        results["counts_equal_recount"] = equal_before and equal_after and history_kept
        results["counts_compared_ranges"] = len(spans) + len(after_spans)
        if not results["counts_equal_recount"]:
            results["counts_problems"] = (problems + more)[:5] + ([] if history_kept else ["history changed"])

        results["catalog_after_prune"] = file_facts(db)
        seed(db, data, cameras, n, prune, now + 3600, 0)
        results["catalog_after_refill"] = file_facts(db)
        before_mb = results["catalog"]["file_mb"]
        results["file_growth_after_refill_pct"] = round(
            (results["catalog_after_refill"]["file_mb"] - before_mb) / before_mb * 100, 2
        )
        db.conn.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
