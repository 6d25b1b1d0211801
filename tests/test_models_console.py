"""Models, Try-it and labeling suggestions in a real Chromium against a real server with an exported model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from appliance.db import write_transaction
from tests.console_support import login, open_labeler, server_with_exported_model
from tests.helpers import ServerProcess, wait_js
from tests.inference_support import jpeg, shapes_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(tiny_yolo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server whose model 1 is exported to ONNX and model 2 is not; both carry metrics."""
    data = tmp_path_factory.mktemp("models-console") / "data"
    with server_with_exported_model(tiny_yolo, data) as site:
        db, model_id = site["db"], site["model_id"]
        row = next(db.query("SELECT * FROM models WHERE id = ?", [model_id]))
        with write_transaction(db):
            db.execute(
                "UPDATE models SET metrics = ? WHERE id = ?",
                [json.dumps({"map50": 0.5, "map50_95": 0.3, "precision": 0.6, "recall": 0.4}), model_id],
            )
            db["models"].insert(
                {**row, "id": 2, "name": "second", "metrics": json.dumps({"map50": 0.7, "map50_95": 0.35})}
            )
        (data / "models" / "2").mkdir(parents=True)
        shutil.copyfile(data / "models" / "1" / "best.pt", data / "models" / "2" / "best.pt")
        yield site


def login_at_1366x800(page: Page, server: ServerProcess, route: str | None = None) -> None:
    page.set_viewport_size({"width": 1366, "height": 800})
    login(page, server, route)


def test_models_page_lists_deploys_and_compares(page: Page, site: dict[str, Any]) -> None:
    server = site["server"]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login_at_1366x800(page, server, "models")
    rows = page.get_by_test_id("model-row")
    expect(rows).to_have_count(2)
    first = page.locator("[data-testid=model-row][data-id='1']")
    expect(first.get_by_test_id("metric-map50")).to_have_text("0.500")
    expect(first.get_by_test_id("export-badge")).to_have_text("onnx 320: completed")
    second = page.locator("[data-testid=model-row][data-id='2']")
    expect(second.get_by_test_id("deploy")).to_be_disabled()  # not exported
    first.get_by_test_id("deploy").click()
    expect(first.get_by_test_id("deployed-badge")).to_be_visible()
    assert site["http"].get("/models/1", headers=site["headers"]).json()["deployed"] is True
    # No TensorRT here: the engine button is off and says why.
    expect(first.get_by_test_id("export-engine")).to_be_disabled()
    assert "TensorRT" in (first.get_by_test_id("export-engine").get_attribute("title") or "")
    expect(page.get_by_test_id("engine-unavailable")).to_be_visible()
    # Compare two models side by side.
    first.get_by_test_id("compare-check").check()
    page.locator("[data-testid=model-row][data-id='2']").get_by_test_id("compare-check").check()
    compare = page.get_by_test_id("compare")
    expect(compare).to_be_visible()
    expect(compare.locator("[data-testid=compare-row][data-metric=map50] td").nth(3)).to_have_text("+0.200")
    # An export queued (no worker runs here) shows its state and can be cancelled.
    second.get_by_test_id("export-onnx").click()
    expect(second.get_by_test_id("export-badge")).to_have_text("onnx 320: pending")
    second.get_by_test_id("cancel-export").click()
    expect(second.get_by_test_id("export-badge")).to_have_text("onnx 320: cancelled")
    assert not errors


def test_try_it_draws_boxes_and_refilters_without_a_request(
    page: Page, site: dict[str, Any], tmp_path: Path
) -> None:
    server = site["server"]
    site["http"].post("/models/1/deploy", headers=site["headers"])
    login_at_1366x800(page, server)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.url.endswith("/inference") else None)
    page.goto(f"{server.url}/#/try")
    expect(page.get_by_test_id("try-model").locator("option")).to_have_count(1)
    image = tmp_path / "shapes.jpg"
    image.write_bytes(jpeg(shapes_image(1)))
    page.get_by_test_id("try-file").set_input_files(str(image))
    wait_js(page, "document.querySelector('[data-testid=try-canvas]').dataset.boxes !== undefined")
    expect(page.get_by_test_id("try-timings")).to_contain_text("inference")
    slider = page.get_by_test_id("try-confidence")
    slider.fill("0.05")
    many = int(page.get_by_test_id("try-canvas").get_attribute("data-boxes") or 0)
    slider.fill("0.95")
    few = int(page.get_by_test_id("try-canvas").get_attribute("data-boxes") or 0)
    assert many > few
    expect(page.get_by_test_id("try-detection")).to_have_count(few)
    assert len(requests) == 1  # the slider filtered in the browser
    # An image the box refuses: the earlier image, boxes and timings leave the screen, the error stays beside.
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    page.get_by_test_id("try-file").set_input_files(str(bad))
    expect(page.get_by_test_id("try-status")).to_contain_text("broken.jpg:")
    expect(page.get_by_test_id("try-canvas")).to_be_hidden()
    expect(page.get_by_test_id("try-detection")).to_have_count(0)
    expect(page.get_by_test_id("try-timings")).to_be_empty()


def test_labeling_suggestions_accept_with_enter_and_reject_with_x(page: Page, site: dict[str, Any]) -> None:
    server, http, headers = site["server"], site["http"], site["headers"]
    http.post("/models/1/deploy", headers=headers)
    dataset = http.post(
        "/datasets", json={"name": "shapes", "classes": ["square", "disc"]}, headers=headers
    ).json()
    files = [("files", ("s.jpg", jpeg(shapes_image(2)), "image/jpeg"))]
    image_id = http.post(f"/datasets/{dataset['id']}/images", files=files, headers=headers).json()["added"][
        0
    ]["id"]
    login_at_1366x800(page, server)
    open_labeler(page, server, dataset["id"], image_id)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.post_data or "") if r.url.endswith("/suggestions") else None)
    page.get_by_test_id("suggest-confidence").fill("0.05")
    page.get_by_test_id("suggest-confidence").dispatch_event("change")
    page.get_by_test_id("suggest-boxes").click()
    items = page.get_by_test_id("suggestion-item")
    expect(items.first).to_be_visible()
    assert '"confidence":0.05' in asked[-1].replace(" ", "")
    proposed = items.count()
    expect(items.first).to_contain_text(".")  # each proposal shows its confidence
    page.keyboard.press("Enter")  # accepts the highlighted (most confident) proposal
    expect(page.get_by_test_id("box-item")).to_have_count(1)
    expect(items).to_have_count(proposed - 1)
    if proposed == 1:  # ask again to have one to reject
        page.get_by_test_id("suggest-boxes").click()
        expect(items).to_have_count(1)
        proposed = 2
    page.keyboard.press("x")  # rejects it: no box is added
    expect(items).to_have_count(proposed - 2)
    expect(page.get_by_test_id("box-item")).to_have_count(1)
    expect(page.get_by_test_id("save-state")).to_have_attribute("data-state", "saved", timeout=10_000)
    saved = http.get(f"/images/{image_id}/annotations", headers=headers).json()
    assert [b["source"] for b in saved["boxes"]].count("manual") == 1
    # Proposals left unreviewed keep the image unlabeled; none left, it is labeled.
    assert saved["status"] == ("unlabeled" if proposed > 2 else "labeled")
    # The confidence control asks again when moved (while proposals asked for here wait): only those above it.
    if proposed > 2:
        with page.expect_request(lambda r: r.url.endswith("/suggestions")) as request:
            page.get_by_test_id("suggest-confidence").fill("0.95")
            page.get_by_test_id("suggest-confidence").dispatch_event("change")
        assert '"confidence":0.95' in (request.value.post_data or "").replace(" ", "")
        expect(page.get_by_test_id("suggest-boxes")).to_be_enabled()
        shown = page.evaluate(
            "[...document.querySelectorAll('[data-testid=suggestion-item] .muted')].map((e) => Number(e.textContent))"
        )
        assert all(c >= 0.95 for c in shown), shown
