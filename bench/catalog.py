"""Catalog benchmark: list pages, stats and annotation PUTs on a generated 100,000-image catalog.

Measured through the service functions and over HTTP against a real `appliance serve`, plus PUT
throughput with 16 concurrent clients, server ready time, web process memory, and a baseline
(GET /health, one `SELECT 1` round trip) from the same run. The last line is one JSON object.

Memory on heavy reads: the web process's RSS once it has answered one request of each kind (idle), then after
one full pass over the catalog (every page of the grid at the console's page size, the stats, the exports
listed), as `web_rss_full_pass_over_idle_mb` (goal <= 20 MB, with `--images 1000000`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
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

from appliance.auth.service import hash_password  # noqa: E402
from appliance.caller import CurrentUser  # noqa: E402
from appliance.catalog import boxes, paging, stats  # noqa: E402
from appliance.catalog.schemas import AnnotationsPut, Box  # noqa: E402
from appliance.db import Database, migrate, open_database  # noqa: E402
from tests.helpers import API, ServerProcess, auth  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
CLASSES = ["bolt", "nut", "washer", "screw", "spring"]
STATUSES = ["unlabeled", "labeled", "labeled", "reviewed"]
IMAGE_W, IMAGE_H = 1280, 960


def build_catalog(db: Database, images: int, boxes_per_image: int, seed: int = 0) -> int:
    """Bulk insert through the real schema (triggers included); returns the dataset id."""
    rng = random.Random(seed)
    now = "2026-01-01T00:00:00.000+00:00"
    db.execute("PRAGMA synchronous = OFF")  # building only; the measured connections use FULL
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES ('admin', ?, 'admin', ?)",
        [hash_password(ADMIN_PASSWORD), now],
    )
    classes = json.dumps([{"name": n, "color": "#ff6b6b"} for n in CLASSES])
    cursor = db.execute(
        "INSERT INTO datasets (name, owner_id, classes, is_public, created_at, updated_at) "
        "VALUES ('bench', 1, ?, 0, ?, ?)",
        [classes, now, now],
    )
    dataset_id = cursor.lastrowid
    assert dataset_id is not None
    batch = 5000
    for start in range(0, images, batch):
        ids = range(start + 1, min(images, start + batch) + 1)
        db.conn.executemany(
            "INSERT INTO image_files (id, sha256, size, width, height, format, created_at) "
            "VALUES (?, ?, 100000, ?, ?, 'jpeg', ?)",
            [(i, hashlib.sha256(str(i).encode()).hexdigest(), IMAGE_W, IMAGE_H, now) for i in ids],
        )
        db.conn.executemany(
            "INSERT INTO images (id, dataset_id, file_id, original_name, status, version, box_count, "
            "added_by, added_at) VALUES (?, ?, ?, ?, ?, 1, ?, 1, ?)",
            [(i, dataset_id, i, f"img{i:06d}.jpg", rng.choice(STATUSES), boxes_per_image, now) for i in ids],
        )
        rows = []
        for i in ids:
            for _ in range(boxes_per_image):
                x1, y1 = rng.uniform(0, IMAGE_W - 200), rng.uniform(0, IMAGE_H - 200)
                w, h = rng.uniform(8, 200), rng.uniform(8, 200)
                rows.append(
                    (i, dataset_id, rng.randrange(len(CLASSES)), x1, y1, x1 + w, y1 + h,
                     stats.size_bucket(w, h), 1, now)
                )  # fmt: skip
        db.conn.executemany(
            "INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, "
            "author_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA synchronous = FULL")
    return dataset_id


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3)}


def boxes_for(rng: random.Random, n: int = 5) -> list[Box]:
    out = []
    for _ in range(n):
        x1, y1 = rng.uniform(0, IMAGE_W - 200), rng.uniform(0, IMAGE_H - 200)
        out.append(
            Box(class_id=rng.randrange(len(CLASSES)), x1=x1, y1=y1, x2=x1 + rng.uniform(8, 200), y2=y1 + 50)
        )
    return out


def service_figures(db: Database, dataset_id: int, images: int, repeat: int) -> dict[str, Any]:
    user = CurrentUser(id=1, username="admin", role="admin", token_id="bench")
    deep = int(images * 0.9)
    rng = random.Random(1)
    cases: dict[str, Callable[[], Any]] = {
        "list_first": lambda: paging.list_images(db, dataset_id, user),
        "list_deep": lambda: paging.list_images(db, dataset_id, user, after=deep),
        "list_status_first": lambda: paging.list_images(db, dataset_id, user, status="reviewed"),
        "list_status_deep": lambda: paging.list_images(db, dataset_id, user, status="reviewed", after=deep),
        "list_class_first": lambda: paging.list_images(db, dataset_id, user, class_id=3),
        "list_class_deep": lambda: paging.list_images(db, dataset_id, user, class_id=3, after=deep),
        "list_status_class_deep": lambda: paging.list_images(
            db, dataset_id, user, status="labeled", class_id=2, after=deep
        ),
        "stats": lambda: stats.dataset_stats(db, dataset_id, user),
    }
    figures: dict[str, Any] = {}
    for name, fn in cases.items():
        page = fn()
        if name.startswith("list"):
            assert page.items, name  # a real page, not an empty result that would be trivially fast
        figures[name] = summary(timed(fn, repeat if name != "stats" else max(20, repeat // 4)))

    def put() -> None:
        image_id = rng.randrange(1, images + 1)
        version = db.execute("SELECT version FROM images WHERE id = ?", [image_id]).fetchone()[0]
        boxes.put_annotations(db, image_id, AnnotationsPut(version=version, boxes=boxes_for(rng)), user)

    figures["put"] = summary(timed(put, repeat))
    return figures


def http_figures(
    server: ServerProcess, token: str, dataset_id: int, images: int, repeat: int
) -> dict[str, Any]:
    headers = auth(token)
    deep = int(images * 0.9)
    rng = random.Random(2)
    base = f"{server.url}{API}"
    figures: dict[str, Any] = {}
    with httpx.Client(headers=headers, timeout=30) as client:

        def get(path: str, **params: Any) -> Callable[[], Any]:
            return lambda: client.get(f"{base}{path}", params=params).raise_for_status()

        cases = {
            "health": get("/health"),
            "list_first": get(f"/datasets/{dataset_id}/images"),
            "list_deep": get(f"/datasets/{dataset_id}/images", after=deep),
            "list_status_deep": get(f"/datasets/{dataset_id}/images", status="reviewed", after=deep),
            "list_class_first": get(f"/datasets/{dataset_id}/images", class_id=3),
            "list_class_deep": get(f"/datasets/{dataset_id}/images", class_id=3, after=deep),
            "stats": get(f"/datasets/{dataset_id}/stats"),
        }
        pid = server.process.pid if server.process else 0
        for name, fn in cases.items():
            count = repeat if name != "stats" else max(20, repeat // 4)
            cpu_before = process_cpu_s(pid)
            figures[name] = summary(timed(fn, count))
            # Server CPU per request: unlike latency, it does not grow when other work shares the cores.
            figures[name]["server_cpu_ms"] = round((process_cpu_s(pid) - cpu_before) * 1000 / (count + 3), 3)

        def put() -> None:
            image_id = rng.randrange(1, images + 1)
            version = client.get(f"{base}/images/{image_id}/annotations").json()["version"]
            body = {"version": version, "boxes": [_box_json(b) for b in boxes_for(rng)]}
            started = time.perf_counter()
            response = client.put(f"{base}/images/{image_id}/annotations", json=body)
            put_times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()

        put_times: list[float] = []
        cpu_before = process_cpu_s(pid)
        for _ in range(repeat):
            put()
        figures["put"] = summary(put_times)
        # Each sample is a GET (for the version) plus the PUT.
        per_pair = (process_cpu_s(pid) - cpu_before) * 1000 / repeat
        figures["put"]["server_cpu_ms"] = round(per_pair, 3)
    return figures


def _box_json(box: Box) -> dict[str, Any]:
    return {"class_id": box.class_id, "x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def put_throughput(
    server: ServerProcess, token: str, images: int, clients: int, seconds: float
) -> dict[str, Any]:
    """Each client PUTs its own slice of images (no conflicts) for `seconds`."""
    base = f"{server.url}{API}"
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    slice_size = images // clients

    def worker(n: int) -> None:
        rng = random.Random(100 + n)
        versions: dict[int, int] = {}
        mine: list[float] = []
        with httpx.Client(headers=auth(token), timeout=60) as client:
            while time.perf_counter() < stop_at:
                image_id = 1 + n * slice_size + rng.randrange(slice_size)
                if image_id not in versions:
                    versions[image_id] = client.get(f"{base}/images/{image_id}/annotations").json()["version"]
                body = {"version": versions[image_id], "boxes": [_box_json(b) for b in boxes_for(rng)]}
                started = time.perf_counter()
                response = client.put(f"{base}/images/{image_id}/annotations", json=body)
                mine.append((time.perf_counter() - started) * 1000)
                if response.status_code == 200:
                    versions[image_id] = response.json()["version"]
                else:
                    with lock:
                        errors.append(f"{response.status_code} {response.text[:100]}")
                    versions.pop(image_id, None)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "puts": len(latencies),
        "puts_per_s": round(len(latencies) / elapsed, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        **summary(latencies),
    }


def fsync_baseline(folder: Path, repeat: int) -> dict[str, float]:
    """4 KB append + fsync in the data folder: the floor under any durable commit (synchronous=FULL)."""
    probe = folder / "fsync-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:

        def once() -> None:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)

        return summary(timed(once, repeat))
    finally:
        os.close(fd)
        probe.unlink()


def full_pass_memory(server: ServerProcess, token: str, dataset_id: int) -> dict[str, Any]:
    """RSS after one request of each kind (idle), then after paging the whole grid, stats and exports."""
    assert server.process is not None
    pid = server.process.pid
    base = f"{server.url}{API}"
    with httpx.Client(headers=auth(token), timeout=60) as client:
        pages = [
            f"/datasets/{dataset_id}/images",
            f"/datasets/{dataset_id}/stats",
            "/usb-exports",
            "/datasets",
        ]
        for path in pages:
            client.get(f"{base}{path}").raise_for_status()
        time.sleep(1)
        idle = process_facts(pid)["rss_mb"]
        started = time.perf_counter()
        after, count, peak = 0, 0, idle
        while True:
            page = client.get(
                f"{base}/datasets/{dataset_id}/images", params={"after": after, "limit": 100}
            ).json()
            count += 1
            if count % 500 == 0:
                peak = max(peak, process_facts(pid)["rss_mb"])
            if page["next_cursor"] is None:
                break
            after = page["next_cursor"]
        for path in pages[1:]:
            client.get(f"{base}{path}").raise_for_status()
        seconds = time.perf_counter() - started
        time.sleep(1)
        after_pass = process_facts(pid)["rss_mb"]
    return {
        "pages": count,
        "seconds": round(seconds, 1),
        "idle_mb": idle,
        "peak_mb": max(peak, after_pass),
        "after_mb": after_pass,
        "over_idle_mb": round(after_pass - idle, 1),
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_facts(pid: int) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {
        "rss_mb": round(rss_kb / 1024, 1),
        "torch_loaded": "torch" in maps,
        "ultralytics_loaded": "ultralytics" in maps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="20,000 images and fewer repeats (about a minute)"
    )
    parser.add_argument("--images", type=int, help="images in the generated dataset (default 100,000)")
    parser.add_argument("--boxes", type=int, default=5, help="boxes per image")
    parser.add_argument("--repeat", type=int, help="samples per measurement")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the PUT throughput")
    parser.add_argument("--seconds", type=float, help="duration of the throughput run")
    args = parser.parse_args()
    images = args.images or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (100 if args.quick else 300)
    seconds = args.seconds or (5.0 if args.quick else 15.0)

    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        db_path = data_dir / "appliance.db"
        db = open_database(db_path)
        migrate(db, db_path)
        started = time.perf_counter()
        dataset_id = build_catalog(db, images, args.boxes)
        build_s = time.perf_counter() - started
        print(f"built {images} images x {args.boxes} boxes in {build_s:.1f} s", file=sys.stderr)

        fsync = fsync_baseline(data_dir, repeat)
        print(f"fsync: {json.dumps(fsync)}", file=sys.stderr)
        in_process = service_figures(db, dataset_id, images, repeat)
        db.conn.close()
        print(f"service: {json.dumps(in_process)}", file=sys.stderr)

        server = ServerProcess(data_dir)
        ready_s = server.start()
        assert server.process is not None
        # Startup is one thread: its CPU time is what "ready" takes on an otherwise idle machine.
        ready_cpu_s = process_cpu_s(server.process.pid)
        try:
            token = httpx.post(
                f"{server.url}{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            ).json()["access_token"]
            memory = full_pass_memory(server, token, dataset_id)
            print(f"full pass: {json.dumps(memory)}", file=sys.stderr)
            over_http = http_figures(server, token, dataset_id, images, repeat)
            print(f"http: {json.dumps(over_http)}", file=sys.stderr)
            throughput = put_throughput(server, token, images, args.clients, seconds)
            print(f"throughput: {json.dumps(throughput)}", file=sys.stderr)
            assert server.process is not None
            facts = process_facts(server.process.pid)
        finally:
            server.stop()

    http_put = over_http["put"]["median_ms"]
    health = over_http["health"]["median_ms"]
    figures = {
        "images": images,
        "boxes_per_image": args.boxes,
        "build_s": round(build_s, 1),
        "service_list_first_p99_ms": in_process["list_first"]["p99_ms"],
        "service_list_deep_p99_ms": in_process["list_deep"]["p99_ms"],
        "service_list_filtered_p99_ms": max(
            v["p99_ms"]
            for k, v in in_process.items()
            if k.startswith("list_") and k not in ("list_first", "list_deep")
        ),
        "service_stats_median_ms": in_process["stats"]["median_ms"],
        "service_stats_p99_ms": in_process["stats"]["p99_ms"],
        "service_put_median_ms": in_process["put"]["median_ms"],
        "service_put_p99_ms": in_process["put"]["p99_ms"],
        "http_health_median_ms": health,
        "http_health_p99_ms": over_http["health"]["p99_ms"],
        "http_list_first_median_ms": over_http["list_first"]["median_ms"],
        "http_list_first_p99_ms": over_http["list_first"]["p99_ms"],
        "http_list_deep_p99_ms": over_http["list_deep"]["p99_ms"],
        "http_list_filtered_p99_ms": max(
            over_http[k]["p99_ms"] for k in ("list_status_deep", "list_class_first", "list_class_deep")
        ),
        "http_stats_median_ms": over_http["stats"]["median_ms"],
        "http_stats_p99_ms": over_http["stats"]["p99_ms"],
        "http_put_median_ms": http_put,
        "http_put_p99_ms": over_http["put"]["p99_ms"],
        "put_vs_health_ratio": round(http_put / health, 2) if health else None,
        "fsync_median_ms": fsync["median_ms"],
        "fsync_p99_ms": fsync["p99_ms"],
        "service_put_vs_fsync_ratio": round(in_process["put"]["median_ms"] / fsync["median_ms"], 2)
        if fsync["median_ms"]
        else None,
        "server_cpu_health_ms": over_http["health"]["server_cpu_ms"],
        "server_cpu_list_first_ms": over_http["list_first"]["server_cpu_ms"],
        "server_cpu_list_class_deep_ms": over_http["list_class_deep"]["server_cpu_ms"],
        "server_cpu_stats_ms": over_http["stats"]["server_cpu_ms"],
        "server_cpu_get_plus_put_ms": over_http["put"]["server_cpu_ms"],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "concurrent_clients": throughput["clients"],
        "concurrent_puts_per_s": throughput["puts_per_s"],
        "concurrent_put_median_ms": throughput["median_ms"],
        "concurrent_put_p99_ms": throughput["p99_ms"],
        "concurrent_put_errors": throughput["errors"],
        "serve_ready_ms": round(ready_s * 1000, 1),
        "serve_ready_cpu_ms": round(ready_cpu_s * 1000, 1),
        "web_rss_mb": facts["rss_mb"],
        "web_rss_idle_mb": memory["idle_mb"],
        "web_rss_full_pass_over_idle_mb": memory["over_idle_mb"],
        "web_rss_full_pass_peak_mb": memory["peak_mb"],
        "full_pass_pages": memory["pages"],
        "web_torch_loaded": facts["torch_loaded"],
        "web_ultralytics_loaded": facts["ultralytics_loaded"],
        "detail_service": in_process,
        "detail_http": over_http,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
