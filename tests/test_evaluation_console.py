"""The console's side of evaluation and shadow mode, in a real Chromium against a real server: the Models
list's evaluation column, a model's Evaluation page (figures, matrix, curves, the images it got wrong) whose
errors open the labeler zoomed onto the box, Compare on the same images, and the Live page's shadow card
(start, agreement, promote, undo, a disagreement sent to a dataset)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.db import open_database
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, write_scenes
from tests.console_support import login, served
from tests.helpers import wait_js
from tests.test_evaluation import SCENES, add_model, cell, run_jobs
from tests.test_shadow import RULES, SEGMENTS

pytestmark = pytest.mark.browser


def test_evaluation_page_opens_each_error_in_the_labeler_and_compare_shows_disagreements(
    page: Page, tmp_path: Path, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    onnx = build_colour_onnx(tmp_path / "colour" / "model_64.onnx")
    with served(tmp_path) as (server, api):
        dataset = api.dataset("line", ["square", "disc"])
        files = []
        for name, (squares, discs, _) in SCENES.items():
            ok, data = cv2.imencode(".png", scene_image(squares, discs, name))
            assert ok
            files.append(("files", (f"{name}.png", data.tobytes(), "image/png")))
        added = {
            Path(i["original_name"]).stem: i
            for i in api.call("POST", f"/datasets/{dataset['id']}/images", files=files)["added"]
        }
        for name, (_, _, labels) in SCENES.items():
            boxes = [
                dict(zip(("x1", "y1", "x2", "y2"), cell(*where), strict=True), class_id=c)
                for c, where in labels
            ]
            api.call(
                "PUT",
                f"/images/{added[name]['id']}/annotations",
                json={"version": 0, "boxes": boxes, "status": "labeled"},
            )
        config = load_config(env={}, data_dir=str(server.data_dir))
        db = open_database(config.db_path)
        model, export = add_model(config, db, onnx, "colour")
        swapped, swapped_export = add_model(config, db, onnx, "swapped", ["disc", "square"])
        db.conn.close()
        first = api.call(
            "POST", f"/models/{model}/evaluations", json={"dataset_id": dataset["id"], "export_id": export}
        )
        api.call(
            "POST",
            f"/models/{swapped}/evaluations",
            json={"split_id": first["split"]["id"], "export_id": swapped_export},
        )
        states = run_jobs(config)
        assert states == ["completed", "completed"], api.call("GET", f"/evaluations/{first['id']}")["error"]

        summary = api.call("GET", f"/evaluations/{first['id']}")["summary"]
        login(page, server, "models")
        row = page.locator(f"[data-testid=model-row][data-id='{model}']")
        expect(row.get_by_test_id("open-evaluation")).to_have_text(
            f"evaluated: mAP50-95 {summary['map50_95']:.3f}"
        )
        row.get_by_test_id("open-evaluation").click()
        expect(page.get_by_test_id("detail-status")).to_have_text("completed")
        expect(page.get_by_test_id("evaluation-map50")).to_have_text(f"{summary['map50']:.3f}")
        expect(page.get_by_test_id("evaluation-class")).to_have_count(1)
        cells = page.get_by_test_id("matrix-cell")
        expect(cells).to_have_count(9)
        expect(
            page.locator("[data-testid=matrix-cell][data-predicted=background][data-true=square]")
        ).to_have_text("1")
        wait_js(page, "Number(document.querySelector('[data-testid=pr-curves]').dataset.points) === 101")
        expect(page.get_by_test_id("evaluation-image")).to_have_count(2)  # b (wrong class) and c (FP, miss)
        page.screenshot(path=str(artifacts_dir / "model-evaluation.png"), full_page=True)
        # Asking for another one: the dataset as it is now (the same content: the same frozen split).
        options = page.get_by_test_id("evaluate-split").locator("option").all_text_contents()
        assert options[0] == 'dataset "line" as it is now' and options[1].startswith(
            "the same images as before"
        )
        page.get_by_test_id("evaluate").click()
        expect(page.get_by_test_id("evaluation-row")).to_have_count(2)
        expect(page.get_by_test_id("detail-status")).to_have_text("pending")
        page.get_by_test_id("evaluation-row").last.click()
        page.get_by_test_id("filter-misses").click()
        expect(page.get_by_test_id("evaluation-image")).to_have_count(1)
        links = page.get_by_test_id("evaluation-image").get_by_test_id("open-in-labeler")
        expect(links).to_have_text(["missed square", "false square (1.00)"])
        links.first.click()
        wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {added['c']['id']}")
        focus = page.evaluate("window.__labeler.focusBox")
        assert [focus[k] for k in ("x1", "y1", "x2", "y2")] == cell(6, 1)
        # Zoomed onto the box: its middle in the middle of the canvas, magnified beyond the fitted image.
        canvas = page.get_by_test_id("label-canvas").bounding_box()
        assert canvas is not None
        middle = page.evaluate("window.__labeler.toClient(208, 48)")
        assert abs(middle["x"] - (canvas["x"] + canvas["width"] / 2)) < 3
        assert abs(middle["y"] - (canvas["y"] + canvas["height"] / 2)) < 3
        assert page.evaluate("window.__labeler.zoom") > min(canvas["width"], canvas["height"]) / 256

        page.goto(f"{server.url}/#/models/compare?a={model}&b={swapped}")
        expect(page.get_by_test_id("disagreements")).to_have_text("3 of 4")
        expect(page.get_by_test_id("disagreement")).to_have_count(3)
        expect(page.locator("[data-testid=disagreement][data-better=a]")).to_have_count(1)  # image a
        expect(page.locator("[data-testid=disagreement][data-better=same]")).to_have_count(2)
        page.screenshot(path=str(artifacts_dir / "model-compare.png"), full_page=True)
    assert watched["dialogs"] == []
    assert [e for e in watched["errors"] if "favicon" not in e] == []


def scene_image(squares: list[tuple[int, int]], discs: list[tuple[int, int]], name: str) -> Any:
    from tests.camera_sources import scene

    return scene(squares, discs, seed=ord(name))


@pytest.mark.slow
def test_live_shadow_card_promotes_and_undoes(
    page: Page, tmp_path: Path, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    onnx = build_colour_onnx(tmp_path / "colour" / "model_64.onnx")
    video = write_scenes(tmp_path / "line.avi", SEGMENTS, fps=15)
    with served(tmp_path) as (server, api):
        config = load_config(env={}, data_dir=str(server.data_dir))
        db = open_database(config.db_path)
        deployed = deploy_model(config, db, onnx, None, "colour")
        candidate, _ = add_model(config, db, onnx, "swapped", ["disc", "square"])
        db.conn.close()
        settings = {"source_type": "file", "source": str(video), "confidence": 0.5, "rules": RULES}
        camera = api.call("POST", "/cameras", json={"name": "press", "settings": settings, "enabled": True})
        dataset = api.dataset("fixes", ["square", "disc"])
        with camera_process(config):
            login(page, server, f"live?camera={camera['id']}")
            card = page.get_by_test_id("shadow-card")
            expect(card.get_by_test_id("shadow-camera-model")).to_contain_text(f"colour (#{deployed})")
            card.get_by_test_id("shadow-model").select_option(str(candidate))
            card.get_by_test_id("shadow-window").fill("20")
            card.get_by_test_id("shadow-start").click()
            expect(card.get_by_test_id("shadow-candidate")).to_contain_text("swapped")
            expect(card.get_by_test_id("shadow-promote")).to_be_enabled(timeout=30_000)
            agreement = card.get_by_test_id("shadow-agreement").text_content() or ""
            assert agreement.endswith("%") and 0 < int(agreement.split()[0]) < 100, agreement
            expect(card.get_by_test_id("shadow-event").first).to_be_visible()
            page.screenshot(path=str(artifacts_dir / "live-shadow.png"), full_page=True)
            card.get_by_test_id("shadow-send-open").first.click()
            card.get_by_test_id("shadow-send-dataset").select_option(str(dataset["id"]))
            card.get_by_test_id("shadow-send").click()
            wait_js(page, "document.body.innerText.includes('to review')")
            assert api.call("GET", f"/datasets/{dataset['id']}/images")["items"]
            card.get_by_test_id("shadow-promote").click()
            expect(card.get_by_test_id("shadow-camera-model")).to_contain_text(f"swapped (#{candidate})")
            expect(card.get_by_test_id("shadow-promotion")).to_contain_text("Promoted swapped")
            card.get_by_test_id("shadow-undo").click()
            expect(card.get_by_test_id("shadow-camera-model")).to_contain_text(f"colour (#{deployed})")
            expect(card.get_by_test_id("shadow-promotion")).to_contain_text("Undone")
            expect(card.get_by_test_id("shadow-candidate")).to_contain_text("swapped")
            time.sleep(0.2)
    assert watched["dialogs"] == []
    assert [e for e in watched["errors"] if "favicon" not in e] == []
