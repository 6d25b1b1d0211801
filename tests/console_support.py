"""Helpers of the browser tests: a real server with its admin and an API client beside the browser, logging
the browser in, forms, and the labeler driven with a real mouse."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Locator, Page

from tests.helpers import ADMIN, API, ServerProcess, auth, image_bytes, wait_js

W, H = 320, 240  # the size of the images Api.upload sends


class Api:
    """The appliance's API over HTTP, as a second client next to the browser."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url + API, timeout=10)
        self.server = server
        self.headers: dict[str, str] = {}
        self.name = "parts"

    def setup(self) -> None:
        response = self.http.post("/auth/setup", json=self.server.setup_body())
        assert response.status_code == 201, response.text
        self.headers = auth(response.json()["access_token"])

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def dataset(self, name: str | None = None, classes: list[Any] | None = None) -> dict[str, Any]:
        body = {"name": name or self.name, "classes": classes or ["bolt", "nut"]}
        return self.call("POST", "/datasets", json=body)

    def upload(self, dataset_id: int, count: int, seed: int | None = None) -> list[dict[str, Any]]:
        seed = dataset_id * 1000 if seed is None else seed
        files = [
            ("files", (f"part-{i:03d}.jpg", image_bytes(W, H, seed=seed + i), "image/jpeg"))
            for i in range(count)
        ]
        return self.call("POST", f"/datasets/{dataset_id}/images", files=files)["added"]

    def boxes(self, image_id: int) -> dict[str, Any]:
        return self.call("GET", f"/images/{image_id}/annotations")


@contextlib.contextmanager
def served(root: Path, env: dict[str, str] | None = None) -> Iterator[tuple[ServerProcess, Api]]:
    """A real `appliance serve` on root/data with its first admin set up; an Api logged in as that admin."""
    with ServerProcess(root / "data", env=env) as server:
        api = Api(server)
        try:
            api.setup()
            yield server, api
        finally:
            api.http.close()


def login(page: Page, server: ServerProcess, route: str | None = None) -> None:
    """Log the browser in through the API (the cookie lands in the page's context); then open `route` (what
    follows '#/') if one is given."""
    response = page.request.post(f"{server.url}{API}/auth/login", data=ADMIN)
    assert response.ok, response.text()
    if route is not None:
        page.goto(f"{server.url}/#/{route}")


def fill_form(scope: Page | Locator, fields: dict[str, str]) -> None:
    """Enter each value in its field, in order: a key is the field's data-testid inside `scope`, or a CSS
    selector when it starts with '['; a <select> gets the option of that value, any other field the text."""
    for key, value in fields.items():
        field = scope.locator(key) if key.startswith("[") else scope.get_by_test_id(key)
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


# --- the labeler ---------------------------------------------------------------------------------


def open_labeler(page: Page, server: ServerProcess, dataset_id: int, image_id: int) -> None:
    page.goto(f"{server.url}/#/datasets/{dataset_id}/label/{image_id}")
    # A cold labeler (its modules, the image, a deployed model's first suggestions) on a loaded 2-core box.
    wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {image_id}", timeout=40.0)


def label_at_actual_size(page: Page, server: ServerProcess, dataset_id: int, image_id: int) -> None:
    """The browser logged in, labeling the image at zoom 1 (one image pixel per CSS pixel)."""
    login(page, server)
    open_labeler(page, server, dataset_id, image_id)
    page.keyboard.press("0")


def label_new_images(
    page: Page,
    server: ServerProcess,
    api: Api,
    count: int = 1,
    name: str | None = None,
    proposals: list[dict[str, Any]] | None = None,
) -> tuple[int, list[int]]:
    """A new dataset (classes bolt, nut) with `count` uploaded images, the first holding `proposals`
    (unreviewed, the image unlabeled) if given; the browser labeling that first image at zoom 1.
    Returns (dataset id, image ids)."""
    dataset = api.dataset(name=name)
    images = [int(i["id"]) for i in api.upload(dataset["id"], count)]
    if proposals:
        body = {"version": 0, "boxes": proposals, "status": "unlabeled"}
        api.call("PUT", f"/images/{images[0]}/annotations", json=body)
    label_at_actual_size(page, server, dataset["id"], images[0])
    return int(dataset["id"]), images


def proposal(class_id: int, x1: int, y1: int, x2: int, y2: int, confidence: float) -> dict[str, Any]:
    """A box the way a model's pre-label is stored: source "model", with its confidence."""
    box = {"class_id": class_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
    return {**box, "source": "model", "confidence": confidence}


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag with the mouse between two image-pixel points of the labeler."""
    a = page.evaluate(f"window.__labeler.toClient({start[0]}, {start[1]})")
    b = page.evaluate(f"window.__labeler.toClient({end[0]}, {end[1]})")
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move((a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2, steps=2)
    page.mouse.move(b["x"], b["y"], steps=2)
    page.mouse.up()


def click_image(page: Page, x: float, y: float) -> None:
    p = page.evaluate(f"window.__labeler.toClient({x}, {y})")
    page.mouse.click(p["x"], p["y"])


def wait_saved(page: Page) -> None:
    wait_js(page, "window.__labeler.saveState === 'saved'")


def assert_boxes(
    stored: list[dict[str, Any]], expected: list[tuple[int, float, float, float, float]]
) -> None:
    got = sorted((b["class_id"], b["x1"], b["y1"], b["x2"], b["y2"]) for b in stored)
    want = sorted(expected)
    assert len(got) == len(want), got
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0], (got, want)
        assert all(abs(a - b) <= 1.0 for a, b in zip(g[1:], w[1:], strict=True)), (got, want)


def add_rows(console: ServerProcess, dataset_id: int, names: list[str]) -> None:
    """Catalog rows straight into SQLite (fast), each with its own file: hard links of the dataset's first upload."""
    data = console.data_dir
    db = sqlite3.connect(data / "appliance.db", timeout=30)
    sha, size, width, height, fmt = db.execute(
        "SELECT f.sha256, f.size, f.width, f.height, f.format FROM images i JOIN image_files f ON f.id = i.file_id "
        "WHERE i.dataset_id = ? ORDER BY i.id LIMIT 1",
        [dataset_id],
    ).fetchone()
    now = "2026-01-01T00:00:00Z"
    with db:
        for name in names:
            fake = hashlib.sha256(f"rows-{dataset_id}-{name}".encode()).hexdigest()
            for folder, ext in (("images", "jpg"), ("thumbs", "jpg")):
                target = data / folder / fake[:2] / f"{fake}.{ext}"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(data / folder / sha[:2] / f"{sha}.{ext}", target)
            file_id = db.execute(
                "INSERT INTO image_files (sha256, size, width, height, format, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [fake, size, width, height, fmt, now],
            ).lastrowid
            db.execute(
                "INSERT INTO images (dataset_id, file_id, original_name, added_at) VALUES (?, ?, ?, ?)",
                [dataset_id, file_id, name, now],
            )
    db.close()


@contextlib.contextmanager
def server_with_exported_model(tiny_weights: Path, data: Path) -> Iterator[dict[str, Any]]:
    """A real server whose model 1 is the oracle model exported to ONNX by a real export job; yields the
    server, an API client with the admin's headers, the catalog (open while the block runs) and its config."""
    from appliance.config import load_config
    from appliance.db import open_database
    from tests.inference_support import copy_exported_model, exported_data_dir

    server = ServerProcess(data)
    server.start()
    http = httpx.Client(base_url=server.url + API, timeout=30)
    token = auth(http.post("/auth/setup", json=server.setup_body()).json()["access_token"])
    config = load_config(env={}, data_dir=str(data))
    db = open_database(config.db_path)
    try:
        model_id = copy_exported_model(exported_data_dir(str(tiny_weights)), config, db)
        yield {
            "server": server,
            "http": http,
            "headers": token,
            "model_id": model_id,
            "db": db,
            "config": config,
        }
    finally:
        db.conn.close()
        http.close()
        server.stop()
