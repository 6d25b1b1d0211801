"""A deep link far into a big dataset opens with one list request; the windows grow both ways in the console."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from tests.console_support import add_rows, login, served
from tests.helpers import wait_js

pytestmark = pytest.mark.browser

FIRST, GAP, SECOND = 1500, 400, 1499  # 3,000 images; another dataset's rows make a jump in the ids

# Cells of the grid that are on screen: position, image id, caption (None while a placeholder).
VISIBLE_CELLS = """() => {
  const box = document.querySelector('[data-testid=grid]').getBoundingClientRect();
  return [...document.querySelectorAll('[data-testid=thumb]')]
    .filter((c) => { const r = c.getBoundingClientRect(); return r.bottom > box.top && r.top < box.bottom; })
    .map((c) => [Number(c.dataset.pos), c.dataset.imageId ? Number(c.dataset.imageId) : null,
                 c.dataset.imageId ? c.querySelector('.caption').textContent : null]);
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server, a 3,000-image dataset (one upload, the rest catalog rows with hard-linked files)."""
    with served(tmp_path_factory.mktemp("deep")) as (server, api):
        dataset = api.dataset("deep", ["bolt", "nut"])
        other = api.dataset("other", ["bolt"])
        api.upload(dataset["id"], 1)
        api.upload(other["id"], 1, seed=99)
        add_rows(server, dataset["id"], [f"row-{n:05d}.jpg" for n in range(FIRST)])
        add_rows(server, other["id"], [f"other-{n:05d}.jpg" for n in range(GAP)])
        add_rows(server, dataset["id"], [f"row-{n:05d}.jpg" for n in range(FIRST, FIRST + SECOND)])
        db = sqlite3.connect(server.data_dir / "appliance.db")
        rows = db.execute(
            "SELECT id, original_name FROM images WHERE dataset_id = ? ORDER BY id", [dataset["id"]]
        ).fetchall()
        db.close()
        assert len(rows) == 1 + FIRST + SECOND
        yield {
            "server": server,
            "dataset": dataset["id"],
            "ids": [r[0] for r in rows],
            "names": {r[0]: r[1] for r in rows},
        }


def list_requests(page: Page, dataset_id: int) -> list[str]:
    """URLs of the image list requests the page makes from now on."""
    seen: list[str] = []
    prefix = f"/api/v1/datasets/{dataset_id}/images?"

    def on_request(request: Request) -> None:
        if request.method == "GET" and prefix in request.url:
            seen.append(request.url.split(prefix, 1)[1])

    page.on("request", on_request)
    return seen


def wait_drawn(page: Page, image_id: int) -> None:
    wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {image_id}")


def test_deep_link_opens_with_one_list_request_and_the_grid_scrolls_to_it(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server, dataset_id, ids = site["server"], site["dataset"], site["ids"]
    total = len(ids)
    login(page, server)
    lists = list_requests(page, dataset_id)
    pos = total - 5
    page.goto(f"{server.url}/#/datasets/{dataset_id}/label/{ids[pos]}")
    wait_drawn(page, ids[pos])
    expect(page.get_by_test_id("image-position")).to_have_text(f"{pos + 1} / {total}")
    expect(page.get_by_test_id("image-name")).to_have_text(site["names"][ids[pos]])
    # What the neighbour prefetch would ask for, it has asked for once the page's network is quiet (no
    # request for 500 ms): a condition, not a fixed wait, so a slow machine only waits longer.
    page.wait_for_load_state("networkidle")
    assert len(lists) == 1 and lists[0].startswith("around="), lists  # not ~6 pages walked from the start

    for key, step in (("d", 1), ("d", 1), ("a", -1)):
        page.keyboard.press(key)
        pos += step
        wait_drawn(page, ids[pos])
        expect(page.get_by_test_id("image-position")).to_have_text(f"{pos + 1} / {total}")
    while pos < total - 1:
        page.keyboard.press("d")
        pos += 1
        wait_drawn(page, ids[pos])
    page.keyboard.press("d")  # the last image: stays
    expect(page.get_by_test_id("toast").last).to_have_text("This is the last image")
    assert page.evaluate("window.__labeler.drawnImageId") == ids[total - 1]

    # Back to the grid: the tile of the image labeled last is on screen at its position, among real tiles.
    page.get_by_test_id("tab-images").click()
    tile = page.locator(f"[data-testid=thumb][data-image-id='{ids[pos]}']")
    expect(tile).to_be_visible()
    expect(tile).to_have_attribute("data-pos", str(pos))
    expect(tile).to_have_class(re.compile(r"\bfocused\b"))
    cells = wait_js(page, f"(({VISIBLE_CELLS})()).every((c) => c[1] !== null) && ({VISIBLE_CELLS})()")
    assert len(cells) >= 10, cells
    for cell_pos, image_id, caption in cells:
        assert image_id == ids[cell_pos] and caption == site["names"][image_id], (cell_pos, image_id)
    assert len(lists) <= 2, lists  # the labeler's window covers the end of the list already

    # Dragging far up: placeholders first, then the pages on screen (a jump, not a walk from the end).
    before = len(lists)
    page.get_by_test_id("grid").evaluate("(el) => { el.scrollTop = el.scrollHeight * 0.4; }")
    cells = wait_js(
        page,
        f"(({VISIBLE_CELLS})()).length > 0 && (({VISIBLE_CELLS})()).every((c) => c[1] !== null) && ({VISIBLE_CELLS})()",
    )
    for cell_pos, image_id, _ in cells:
        assert image_id == ids[cell_pos], (cell_pos, image_id)
    assert len(lists) - before <= 4, lists[before:]
    assert watched["errors"] == [] and watched["dialogs"] == []


def test_previous_and_next_cross_the_window_edges(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server, dataset_id, ids = site["server"], site["dataset"], site["ids"]
    login(page, server, "datasets")
    page.get_by_test_id("datasets-table").wait_for()
    # Pages of 20 images, so the window around a deep link has its edges 10 key presses away.
    page.evaluate(
        f"async () => {{ const m = await import('/js/image-index.js'); m.setPageSize(20); m.invalidate({dataset_id}); }}"
    )
    lists = list_requests(page, dataset_id)
    pos = FIRST - 2  # next to the jump in the ids
    page.evaluate("(h) => { location.hash = h; }", f"#/datasets/{dataset_id}/label/{ids[pos]}")
    wait_drawn(page, ids[pos])
    assert lists and lists[0].startswith("around=") and "limit=20" in lists[0], lists
    for _ in range(14):  # back across the window's first image: before= pages
        page.keyboard.press("a")
        pos -= 1
        wait_drawn(page, ids[pos])
    expect(page.get_by_test_id("image-position")).to_have_text(f"{pos + 1} / {len(ids)}")
    assert any(url.startswith("before=") for url in lists), lists
    for _ in range(30):  # forward across the far edge: after= pages
        page.keyboard.press("d")
        pos += 1
        wait_drawn(page, ids[pos])
    expect(page.get_by_test_id("image-position")).to_have_text(f"{pos + 1} / {len(ids)}")
    assert any(url.startswith("after=") for url in lists), lists
    assert len(lists) <= 8, lists  # a page per 20 images, give or take the prefetch
    assert watched["errors"] == [] and watched["dialogs"] == []


# ImageIndex against a simulated list API (the semantics of catalog.service.list_images) in the browser:
# random lists (some with big jumps in the ids), random ranges and deep ids, lists that change in between.
INDEX_FUZZ = """async (seeds) => {
  const { ImageIndex, setPageSize } = await import('/js/image-index.js');
  let ids = [];
  let calls = 0;
  const reply = (status, body) => new Response(JSON.stringify(body),
    { status, headers: { 'content-type': 'application/json' } });
  window.fetch = async (url) => {
    // The console itself runs on this page too (setup state, polling): only image lists are simulated and counted.
    if (!String(url).includes('/datasets/1/images?')) return reply(404, { status_code: 404, detail: 'not simulated' });
    calls += 1;
    const q = Object.fromEntries(new URL(url, location.href).searchParams);
    const limit = Number(q.limit);
    let items;
    let offset;
    if (q.around) {
      const k = ids.indexOf(Number(q.around));
      if (k < 0) return reply(404, { status_code: 404, detail: 'not in the list' });
      offset = Math.max(0, Math.min(k - Math.floor(limit / 2), ids.length - limit));
      items = ids.slice(offset, offset + limit);
    } else if (q.before) {
      const older = ids.filter((i) => i < Number(q.before));
      items = older.slice(-limit);
      offset = older.length - items.length;
    } else {
      const after = Number(q.after || 0);
      items = ids.filter((i) => i > after).slice(0, limit);
      offset = items.length ? ids.indexOf(items[0]) : ids.length;
    }
    const more = items.length > 0 && offset + items.length < ids.length;
    return reply(200, { items: items.map((id) => ({ id })), total: ids.length, offset,
      prev_cursor: offset > 0 && items.length ? items[0] : null, next_cursor: more ? items[items.length - 1] : null });
  };
  const problems = [];
  let worst = 0;
  for (let seed = 1; seed <= seeds; seed += 1) {
    let s = seed;
    const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const changing = seed % 2 === 0;
    const jumpy = seed % 5 === 0;
    ids = [];
    let id = 0;
    for (let i = 0, n = Math.floor(rnd() * 4000); i < n; i += 1) {
      id += 1 + (jumpy && rnd() < 0.01 ? Math.floor(rnd() * 50000) : Math.floor(rnd() * 4));
      ids.push(id);
    }
    setPageSize([20, 50, 500][seed % 3]);
    const index = new ImageIndex(1, {});
    for (let op = 0; op < 25; op += 1) {
      const where = `seed ${seed} op ${op}`;
      if (changing && rnd() < 0.3) {
        const next = ids.filter(() => rnd() > 0.02);
        for (let k = 0; k < 5; k += 1) next.push(Math.floor(rnd() * (id + 50)) + 1);
        ids = [...new Set(next)].sort((a, b) => a - b);
      }
      calls = 0;
      if (rnd() < 0.3 && ids.length) {
        const target = ids[Math.floor(rnd() * ids.length)];
        if (!(await index.ensureId(target))) problems.push(`${where}: image ${target} not found`);
        if (calls > 1) problems.push(`${where}: ensureId made ${calls} requests`);
      } else {
        const from = Math.floor(rnd() * (ids.length + 10)) - 5;
        const to = from + Math.floor(rnd() * 60);
        await index.ensureRange(from, to);
        if (!index.covered(from, to)) problems.push(`${where}: ${from}-${to} not loaded`);
        if (!jumpy) worst = Math.max(worst, calls);
      }
      const loaded = [...index.items.entries()].sort((a, b) => a[0] - b[0]);
      for (let i = 0; i < loaded.length; i += 1) {
        const [pos, item] = loaded[i];
        if (!changing && ids[pos] !== item.id) problems.push(`${where}: position ${pos} holds ${item.id}`);
        if (i && item.id <= loaded[i - 1][1].id) problems.push(`${where}: ids out of order at ${pos}`);
        if (index.positions.get(item.id) !== pos) problems.push(`${where}: id map off at ${pos}`);
        if (pos < 0 || pos >= index.total) problems.push(`${where}: position ${pos} outside 0..${index.total}`);
      }
      const inRuns = index.runs.reduce((n, r) => n + r.end - r.start, 0);
      if (inRuns !== index.items.size) problems.push(`${where}: windows hold ${inRuns}, items ${index.items.size}`);
      if (problems.length) return { problems, worst };
    }
  }
  return { problems, worst };
}"""


def test_image_index_windows_against_a_simulated_api(page: Page, site: dict[str, Any]) -> None:
    page.goto(site["server"].url + "/")  # the console's origin, for its modules; nothing is logged in
    result = page.evaluate(INDEX_FUZZ, 90)
    assert result["problems"] == [], result["problems"][:5]
    # Ids without big jumps: a range anywhere in the list is loaded within a handful of requests.
    assert result["worst"] <= 8, result
