"""The Train page in a real Chromium against a real `appliance serve` and a real `appliance worker`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console_support import fill_form, login
from tests.helpers import API, ServerProcess, auth, wait_js
from tests.workers import WorkerProcess, build_synthetic_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAIN_TIMEOUT_MS = 420_000


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[ServerProcess, WorkerProcess, dict[str, Any]]]:
    server = ServerProcess(tmp_path / "data")
    server.start()
    worker = WorkerProcess(tmp_path / "data").start()
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        response = http.post(f"{API}/auth/setup", json=server.setup_body())
        assert response.status_code == 201, response.text
        headers = auth(response.json()["access_token"])
        dataset = build_synthetic_dataset(http, headers, name="shapes", count=14)
        yield server, worker, dataset
    finally:
        http.close()
        worker.stop()
        server.stop()


def test_train_page_starts_watches_cancels_and_shows_results(
    page: Page, box: tuple[ServerProcess, WorkerProcess, dict[str, Any]]
) -> None:
    server, worker, dataset = box
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1366, "height": 900})
    login(page, server, "training")
    form = page.get_by_test_id("train-form")
    expect(form).to_be_visible()
    # Jetson Orin Nano defaults.
    expect(page.get_by_test_id("train-imgsz")).to_have_value("640")
    expect(page.get_by_test_id("train-batch")).to_have_value("8")
    fill_form(page, {"train-dataset": str(dataset["id"]), "train-base": "yolov8n.yaml",
                     "train-epochs": "2", "train-imgsz": "100"})  # fmt: skip
    page.get_by_test_id("train-start").click()
    expect(page.get_by_test_id("train-error")).to_contain_text("multiple of 32")
    fill_form(page, {"train-imgsz": "64", "train-batch": "4"})
    page.get_by_test_id("train-start").click()
    page.wait_for_url("**/#/training/1")
    expect(page.get_by_test_id("job-progress-text")).to_contain_text("epoch")

    # A second job waits behind the first; cancel it from its page (pending -> cancelled at once).
    page.goto(f"{server.url}/#/training")
    fill_form(page, {"train-epochs": "5", "train-imgsz": "64"})
    page.get_by_test_id("train-start").click()
    page.wait_for_url("**/#/training/2")
    page.get_by_test_id("job-cancel").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.locator("[data-testid=job-status][data-status=cancelled]")).to_be_visible(timeout=15_000)

    # Back to the first: live progress, then completed with a chart per epoch, a model and the plots.
    page.goto(f"{server.url}/#/training/1")
    expect(page.locator("[data-testid=job-status][data-status=completed]")).to_be_visible(
        timeout=TRAIN_TIMEOUT_MS
    )
    wait_js(page, "document.querySelector('[data-testid=chart-loss]').dataset.points === '2'")
    assert page.get_by_test_id("chart-map").get_attribute("data-points") == "2"
    expect(page.get_by_test_id("metric-row")).to_have_count(2)
    expect(page.get_by_test_id("job-model")).to_contain_text("Model")
    expect(page.get_by_test_id("job-log")).not_to_be_empty()
    assert page.get_by_test_id("job-cancel").is_hidden()
    plots = page.get_by_test_id("job-plot")
    expect(plots.first).to_be_visible()
    wait_js(
        page,
        "[...document.querySelectorAll('[data-testid=job-plot]')].every(i => i.complete && i.naturalWidth > 0)",
    )
    names = {plots.nth(i).get_attribute("data-name") for i in range(plots.count())}
    assert {"results.png", "confusion_matrix.png"} <= names
    # The chart was drawn (non-blank pixels on the canvas).
    drawn = page.evaluate(
        "(() => { const c = document.querySelector('[data-testid=chart-map]');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()"
    )
    assert drawn > 500

    page.goto(f"{server.url}/#/training")
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(2)
    expect(page.locator("[data-testid=job-row][data-status=completed]")).to_have_count(1)
    expect(page.locator("[data-testid=job-row][data-status=cancelled]")).to_have_count(1)
    assert errors == [], errors
