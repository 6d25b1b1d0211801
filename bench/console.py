"""Console speed in a real Chromium on a 100,000-image dataset: grid first paint, labeler open, "next" image,
a deep link near the end of the dataset.

    .venv/bin/python bench/console.py [--quick] [--images N] [--reps N]

Seeds a fresh data folder: a dozen real images uploaded through the API (real files and thumbnails), then
catalog rows inserted straight into SQLite up to N images; the first few thousand (and the last few dozen)
point at hard links of the real files so every thumbnail the grid paints (and every image the labeler opens)
is real. Starts a real `appliance serve` and drives Debian's Chromium with Playwright. Baseline in the same
run: a bare fetch of one thumbnail and of one static file from the same server. Prints one JSON object on the
last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import ADMIN, API, ServerProcess, auth  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
REAL_IMAGES = 12
LINKED = 3000  # rows whose files exist on disk (hard links of the real ones)
TAIL_LINKED = 50  # and the last rows, for the deep link near the end
DEEP_FROM_END = 10  # the deep link opens the image this many places before the last one
WITH_BOXES = 2000  # rows that get boxes, so "next" draws boxes too

# Waits inside the page (the console's CSP forbids eval, so no wait_for_function with strings).
THUMBS_PAINTED = """async () => {
  const visibleDone = () => {
    const cells = [...document.querySelectorAll('[data-testid=thumb][data-image-id]')];
    const vh = innerHeight;
    const visible = cells.filter((c) => { const r = c.getBoundingClientRect(); return r.bottom > 0 && r.top < vh; });
    return visible.length > 0 && visible.every((c) => { const i = c.querySelector('img'); return i.complete && i.naturalWidth > 0; });
  };
  while (!visibleDone()) await new Promise((r) => requestAnimationFrame(r));
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now();
}"""

GRID_FROM_LIST = """async (hash) => {
  const t0 = performance.now();
  location.hash = hash;
  await new Promise((r) => requestAnimationFrame(r));
  const visibleDone = () => {
    const cells = [...document.querySelectorAll('[data-testid=thumb][data-image-id]')];
    const visible = cells.filter((c) => { const r = c.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; });
    return visible.length > 0 && visible.every((c) => { const i = c.querySelector('img'); return i.complete && i.naturalWidth > 0; });
  };
  while (!visibleDone()) await new Promise((r) => requestAnimationFrame(r));
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - t0;
}"""

# Where the cold first paint went: shell (HTML + modules), first keyset page, last thumbnail received.
BREAKDOWN = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const page = res.filter((e) => e.name.includes('/images?')).map((e) => e.responseEnd);
  const thumbs = res.filter((e) => e.name.includes('/thumbnail')).map((e) => e.responseEnd);
  return [nav.domContentLoadedEventEnd, Math.min(...page), Math.max(...thumbs), thumbs.length];
}"""

OPEN_LABELER = """async ([hash, id]) => {
  const t0 = performance.now();
  location.hash = hash;
  while (!(window.__labeler && window.__labeler.drawnImageId === id)) await new Promise((r) => requestAnimationFrame(r));
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - t0;
}"""

NEXT_IMAGE = """async (id) => {
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent('keydown', { key: 'd', bubbles: true }));
  while (window.__labeler.drawnImageId !== id) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - t0;
}"""

# A cold page load of a labeler link: navigation start until the image and its boxes are drawn, and how many
# image list requests it took (the console asks for one page around the image, however deep).
LINK_OPENED = """async (id) => {
  while (!(window.__labeler && window.__labeler.drawnImageId === id)) await new Promise((r) => requestAnimationFrame(r));
  await new Promise((r) => requestAnimationFrame(r));
  const lists = performance.getEntriesByType('resource').filter((e) => e.name.includes('/images?')).length;
  return [performance.now(), lists];
}"""

# What the console did before it had before/around pages: walk keyset pages of 500 from the start until the
# image turns up (the same requests, without drawing anything).
FORWARD_WALK = """async ([datasetId, id]) => {
  const t0 = performance.now();
  let after = 0;
  let pages = 0;
  for (;;) {
    const r = await fetch(`/api/v1/datasets/${datasetId}/images?after=${after}&limit=500`, { credentials: 'same-origin' });
    const page = await r.json();
    pages += 1;
    if (page.items.some((i) => i.id === id) || page.next_cursor === null) break;
    after = page.next_cursor;
  }
  return [performance.now() - t0, pages];
}"""

FETCH = """async (url) => {
  const t0 = performance.now();
  const r = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
  await r.arrayBuffer();
  return performance.now() - t0;
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> tuple[float, float]:
    return round(statistics.median(values), 1), round(percentile(values, 0.99), 1)


def real_image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = (rng.integers(0, 60, (480, 640, 3), dtype=np.uint8) + 40).astype(np.uint8)
    cv2.rectangle(image, (120 + seed * 10, 100), (300 + seed * 10, 260), (40, 40, 220), -1)
    cv2.circle(image, (480, 330 - seed * 5), 60, (220, 180, 40), -1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return encoded.tobytes()


def seed_catalog(server: ServerProcess, total: int) -> tuple[int, dict[str, str]]:
    """Admin, a dataset with real uploads, then rows straight into SQLite up to `total` images."""
    http = httpx.Client(base_url=server.url + API, timeout=60)
    headers = auth(http.post("/auth/setup", json=server.setup_body()).json()["access_token"])
    dataset = http.post(
        "/datasets", json={"name": "line 4", "classes": ["scratch", "dent", "missing screw"]}, headers=headers
    ).json()
    files = [("files", (f"real-{i:02d}.jpg", real_image(i), "image/jpeg")) for i in range(REAL_IMAGES)]
    added = http.post(f"/datasets/{dataset['id']}/images", files=files, headers=headers).json()["added"]
    http.close()

    data = server.data_dir
    db = sqlite3.connect(data / "appliance.db", timeout=30)
    real = db.execute(
        "SELECT f.sha256, f.size, f.width, f.height, f.format FROM images i JOIN image_files f ON f.id = i.file_id "
        "WHERE i.dataset_id = ? ORDER BY i.id",
        [dataset["id"]],
    ).fetchall()
    assert len(real) == len(added) == REAL_IMAGES
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    extra = total - REAL_IMAGES
    file_rows = []
    for n in range(extra):
        sha, size, width, height, fmt = real[n % REAL_IMAGES]
        fake = hashlib.sha256(f"bench-{n}".encode()).hexdigest()
        file_rows.append((fake, size, width, height, fmt, now))
        if n < LINKED or n >= extra - TAIL_LINKED:
            for folder, ext in (
                ("images", "jpg"),
                ("thumbs", "jpg"),
            ):  # thumbnails are JPEG (storage.thumb_path)
                source = data / folder / sha[:2] / f"{sha}.{ext}"
                target = data / folder / fake[:2] / f"{fake}.{ext}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(source, target)
    with db:
        first_file = db.execute("SELECT COALESCE(MAX(id), 0) FROM image_files").fetchone()[0] + 1
        db.executemany(
            "INSERT INTO image_files (sha256, size, width, height, format, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            file_rows,
        )
        db.executemany(
            "INSERT INTO images (dataset_id, file_id, original_name, status, box_count, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ((dataset["id"], first_file + n, f"cam1-{n:06d}.jpg", "unlabeled", 0, now) for n in range(extra)),
        )
        ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM images WHERE dataset_id = ? ORDER BY id LIMIT ?", [dataset["id"], WITH_BOXES]
            )
        ]
        boxes = []
        for k, image_id in enumerate(ids):
            for j in range(3):
                x = 40 + 150 * j + (k % 7) * 3
                boxes.append((image_id, dataset["id"], j, x, 100, x + 120, 220, 6, "manual", None, None, now))
        db.executemany(
            "INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, source, "
            "confidence, author_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            boxes,
        )
        db.executemany(
            "UPDATE images SET status = 'labeled', box_count = 3, version = 1 WHERE id = ?",
            [(i,) for i in ids],
        )
    db.close()
    return dataset["id"], headers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20,000 images and fewer repetitions")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    total = args.images or (20_000 if args.quick else 100_000)
    reps = args.reps or (4 if args.quick else 15)
    next_reps = reps * 6

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    server = ServerProcess(work / "data")
    results: dict[str, Any] = {
        "images": total,
        "reps": reps,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 1),
    }
    try:
        server.start(timeout=60)
        started = time.perf_counter()
        dataset_id, _ = seed_catalog(server, total)
        results["seed_s"] = round(time.perf_counter() - started, 1)
        grid_url = f"{server.url}/#/datasets/{dataset_id}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-quic"])

            def new_page() -> Any:
                context = browser.new_context(viewport={"width": 1366, "height": 768})
                login = context.request.post(f"{server.url}{API}/auth/login", data=ADMIN)
                assert login.ok, login.text()
                return context, context.new_page()

            # Baseline: the same server answering a bare thumbnail fetch and a static file fetch.
            context, page = new_page()
            page.goto(f"{server.url}/#/datasets")
            page.get_by_test_id("datasets-table").wait_for()
            thumb_ms = [
                page.evaluate(FETCH, f"/api/v1/images/{1 + i % 12}/thumbnail") for i in range(reps * 4)
            ]
            static_ms = [page.evaluate(FETCH, "/css/app.css") for _ in range(reps * 4)]
            context.close()

            # Grid first paint: a cold browser context each time (no cached modules, pages or thumbnails),
            # from navigation start to every visible thumbnail decoded and painted.
            paint_ms = []
            breakdown: list[list[float]] = []
            cells = 0
            for _ in range(reps):
                context, page = new_page()
                page.goto(grid_url)
                paint_ms.append(page.evaluate(THUMBS_PAINTED))
                breakdown.append(page.evaluate(BREAKDOWN))
                cells = page.locator("[data-testid=thumb][data-image-id]").count()
                context.close()
            results["grid_cells_in_dom"] = cells

            # The same, inside a session: from the datasets list back to the grid (modules and thumbnails cached).
            context, page = new_page()
            page.goto(grid_url)
            page.evaluate(THUMBS_PAINTED)
            warm_ms = []
            for _ in range(reps):
                page.evaluate("(h) => { location.hash = h; }", "#/datasets")
                page.get_by_test_id("datasets-table").wait_for()
                warm_ms.append(page.evaluate(GRID_FROM_LIST, f"#/datasets/{dataset_id}"))
            context.close()

            # A link to the labeler opened in a cold context: the first image, and one near the end of the
            # dataset (a forward-only list would walk total / 500 pages to find it).
            deep_id = total - DEEP_FROM_END
            link_ms: dict[str, list[float]] = {"first": [], "deep": []}
            deep_lists = 0
            walk_ms: list[float] = []
            walk_pages = 0
            for rep in range(reps):
                for which, image_id in (("first", 1), ("deep", deep_id)):
                    context, page = new_page()
                    page.goto(f"{server.url}/#/datasets/{dataset_id}/label/{image_id}")
                    opened_ms, lists = page.evaluate(LINK_OPENED, image_id)
                    link_ms[which].append(opened_ms)
                    if which == "deep":
                        deep_lists = max(deep_lists, int(lists))
                        position = page.get_by_test_id("image-position").text_content()
                        assert position == f"{total - DEEP_FROM_END} / {total}", position
                        if rep < 3:
                            walked_ms, walk_pages = page.evaluate(FORWARD_WALK, [dataset_id, image_id])
                            walk_ms.append(walked_ms)
                    context.close()

            # Open the labeler from the grid (SPA navigation), a different image each time.
            context, page = new_page()
            page.goto(grid_url)
            page.evaluate(THUMBS_PAINTED)
            page.screenshot(path=str(work / "grid.png"))
            open_ms = []
            for i in range(reps):
                image_id = REAL_IMAGES + 1 + i * 37
                page.evaluate("(h) => { location.hash = h; }", grid_url.split("#")[1])
                page.get_by_test_id("grid").wait_for()
                open_ms.append(
                    page.evaluate(OPEN_LABELER, [f"#/datasets/{dataset_id}/label/{image_id}", image_id])
                )

            # "Next" with the image in cache: wait for the prefetch, then press D and wait for the drawn frame.
            page.evaluate("(h) => { location.hash = h; }", f"#/datasets/{dataset_id}/label/1")
            for _ in range(200):
                if page.evaluate("window.__labeler && window.__labeler.drawnImageId === 1"):
                    break
                time.sleep(0.02)
            next_ms = []
            current = 1
            for _ in range(next_reps):
                target = current + 1
                for _ in range(200):
                    if page.evaluate(f"window.__labeler.cachedImages.includes({target})"):
                        break
                    time.sleep(0.01)
                time.sleep(0.08)  # let the prefetched image finish decoding
                next_ms.append(page.evaluate(NEXT_IMAGE, target))
                current = target
            results["next_image_boxes_drawn"] = len(page.evaluate("window.__labeler.boxes"))
            context.close()
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    results["grid_first_paint_ms_median"], results["grid_first_paint_ms_p99"] = summary(paint_ms)
    results["grid_cold_shell_ready_ms_median"] = round(statistics.median(b[0] for b in breakdown), 1)
    results["grid_cold_first_page_ms_median"] = round(statistics.median(b[1] for b in breakdown), 1)
    results["grid_cold_thumbnails_received_ms_median"] = round(statistics.median(b[2] for b in breakdown), 1)
    results["grid_cold_thumbnail_requests"] = int(breakdown[-1][3])
    results["grid_revisit_paint_ms_median"], results["grid_revisit_paint_ms_p99"] = summary(warm_ms)
    results["label_open_ms_median"], results["label_open_ms_p99"] = summary(open_ms)
    results["next_image_ms_median"], results["next_image_ms_p99"] = summary(next_ms)
    results["link_first_image_ms_median"], results["link_first_image_ms_p99"] = summary(link_ms["first"])
    results["deep_link_ms_median"], results["deep_link_ms_p99"] = summary(link_ms["deep"])
    results["deep_link_vs_first_image"] = round(
        results["deep_link_ms_median"] / max(results["link_first_image_ms_median"], 0.01), 2
    )
    results["deep_link_position"] = total - DEEP_FROM_END
    results["deep_link_list_requests"] = deep_lists
    results["baseline_forward_walk_to_deep_image_ms_median"], _ = summary(walk_ms)
    results["baseline_forward_walk_pages"] = walk_pages
    results["baseline_thumbnail_fetch_ms_median"], _ = summary(thumb_ms)
    results["baseline_static_fetch_ms_median"], _ = summary(static_ms)
    results["grid_first_paint_vs_thumbnail_fetch"] = round(
        results["grid_first_paint_ms_median"] / max(results["baseline_thumbnail_fetch_ms_median"], 0.01), 1
    )
    results["next_image_reps"] = len(next_ms)
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
    results["targets_met"] = (
        results["grid_first_paint_ms_median"] < 1000 and results["next_image_ms_median"] < 150
    )
    print(
        f"grid first paint {results['grid_first_paint_ms_median']} ms cold, "
        f"{results['grid_revisit_paint_ms_median']} ms revisit, labeler open "
        f"{results['label_open_ms_median']} ms, next image {results['next_image_ms_median']} ms "
        f"(p99 {results['next_image_ms_p99']}), deep link {results['deep_link_ms_median']} ms vs first image "
        f"{results['link_first_image_ms_median']} ms ({results['deep_link_list_requests']} list request), "
        "baseline thumbnail fetch "
        f"{results['baseline_thumbnail_fetch_ms_median']} ms",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
