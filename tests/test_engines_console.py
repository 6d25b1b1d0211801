"""The console's engine pages in a real Chromium against a real server: what runs each model (engine, device,
precision), an admin pinning another engine, the accuracy gate's two accuracies and speeds side by side with
its decision, asking for a measurement, and Try-it naming the engine and device."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from appliance.clock import now_iso
from appliance.db import write_transaction
from tests.console_support import login, server_with_exported_model
from tests.helpers import wait_js
from tests.inference_support import jpeg, shapes_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GATE = {
    "engine": "openvino", "device": "AMD EPYC", "baseline_precision": "fp32", "val_images": 40, "val_labels": 120,
    "max_drop_points": 1.0, "min_speedup": 1.05, "calibration_images": 300, "evaluated_at": "2026-12-07T10:00:00Z",
}  # fmt: skip
REFUSED = {
    **GATE, "precision": "int8", "baseline_map50_95": 0.612, "candidate_map50_95": 0.538, "map_drop_points": 7.4,
    "baseline_ms": 19.2, "candidate_ms": 11.4, "speedup": 1.68, "accepted": False,
    "reason": "INT8 refused: it loses too much accuracy, mAP50-95 0.538 against 0.612 for FP32: a drop of 7.40 points",
}  # fmt: skip
ACCEPTED = {
    **GATE, "precision": "bf16", "baseline_map50_95": 0.612, "candidate_map50_95": 0.611, "map_drop_points": 0.1,
    "baseline_ms": 19.2, "candidate_ms": 10.1, "speedup": 1.9, "accepted": True, "calibration_images": 0,
    "reason": "BF16 accepted: mAP50-95 0.611 against 0.612 for FP32",
}  # fmt: skip


@pytest.fixture(scope="module")
def site(tiny_yolo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server whose model 1 is exported to ONNX, with two measured reduced precisions on record."""
    with server_with_exported_model(tiny_yolo, tmp_path_factory.mktemp("engines-console") / "data") as site:
        with write_transaction(site["db"]):
            for gate, status in ((REFUSED, "refused"), (ACCEPTED, "completed")):
                entry = {"format": "openvino", "precision": gate["precision"], "imgsz": 320, "dynamic": False}
                site["db"].execute(
                    """INSERT INTO model_exports (model_id, format, precision, imgsz, status, metadata, created_at,
                                                  finished_at)
                       VALUES (?, 'openvino', ?, 320, ?, ?, ?, ?)""",
                    [
                        site["model_id"],
                        gate["precision"],
                        status,
                        json.dumps({**entry, "gate": gate}),
                        now_iso(),
                        now_iso(),
                    ],
                )
        yield site


def test_models_page_shows_what_runs_pins_an_engine_and_the_measured_precisions(
    page: Page, site: dict[str, Any]
) -> None:
    server = site["server"]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1366, "height": 800})
    login(page, server, "models")
    row = page.locator("[data-testid=model-row][data-id='1']")
    engine = page.locator("[data-testid=model-engine][data-id='1']")  # the line under the model's row
    expect(engine.get_by_test_id("runs-on")).to_have_text("runs on openvino fp32")  # OpenVINO by default here
    # The measurements, side by side: both accuracies, both speeds, the decision and its reason.
    refused = page.locator("[data-testid=precision-gate][data-precision=int8]")
    expect(refused.get_by_test_id("gate-baseline-map")).to_have_text("0.612")
    expect(refused.get_by_test_id("gate-candidate-map")).to_have_text("0.538")
    expect(refused.get_by_test_id("gate-baseline-ms")).to_have_text("19.2")
    expect(refused.get_by_test_id("gate-candidate-ms")).to_have_text("11.4")
    expect(refused.get_by_test_id("gate-decision")).to_have_text("refused")
    expect(refused.get_by_test_id("gate-reason")).to_contain_text("a drop of 7.40 points")
    accepted = page.locator("[data-testid=precision-gate][data-precision=bf16]")
    expect(accepted.get_by_test_id("gate-decision")).to_have_text("offered")
    expect(accepted.get_by_test_id("gate-candidate-ms")).to_have_text("10.1")
    # An admin pins ONNX Runtime for this model: what runs it follows.
    options = engine.get_by_test_id("engine-pin").locator("option")
    assert "onnxruntime" in options.evaluate_all("(os) => os.map((o) => o.value)")
    assert "tensorrt" not in options.evaluate_all("(os) => os.map((o) => o.value)")  # not on this box
    engine.get_by_test_id("engine-pin").select_option("onnxruntime")
    expect(engine.get_by_test_id("runs-on")).to_have_text("runs on onnxruntime fp32")
    assert site["http"].get("/models/1", headers=site["headers"]).json()["engine"] == "onnxruntime"
    engine.get_by_test_id("engine-pin").select_option("auto")
    expect(engine.get_by_test_id("runs-on")).to_have_text("runs on openvino fp32")
    # Asking for a measurement queues an OpenVINO INT8 export (no worker runs here).
    choices = engine.get_by_test_id("reduced-precision").locator("option")
    assert "openvino/int8" in choices.evaluate_all("(os) => os.map((o) => o.value)")
    engine.get_by_test_id("reduced-precision").select_option("openvino/int8")
    engine.get_by_test_id("evaluate-precision").click()
    expect(row.get_by_test_id("export-badge").first).to_have_text("openvino int8 320: pending")
    exports = site["http"].get("/models/1/exports", headers=site["headers"]).json()
    assert exports[-1]["format"] == "openvino" and exports[-1]["precision"] == "int8"
    row.get_by_test_id("cancel-export").click()
    assert not errors


def test_try_it_names_the_engine_and_device(page: Page, site: dict[str, Any], tmp_path: Path) -> None:
    server = site["server"]
    site["http"].post("/models/1/deploy", headers=site["headers"])
    page.set_viewport_size({"width": 1366, "height": 800})
    login(page, server, "try")
    image = tmp_path / "shapes.jpg"
    image.write_bytes(jpeg(shapes_image(1)))
    page.get_by_test_id("try-file").set_input_files(str(image))
    wait_js(page, "document.querySelector('[data-testid=try-canvas]').dataset.boxes !== undefined")
    expect(page.get_by_test_id("try-engine")).to_contain_text("openvino on ")
    expect(page.get_by_test_id("try-engine")).to_contain_text(", fp32, image 200×150")


def test_a_camera_pins_its_engine_in_its_settings(page: Page, site: dict[str, Any], tmp_path: Path) -> None:
    http, headers, server = site["http"], site["headers"], site["server"]
    settings = {"source_type": "file", "source": str(tmp_path / "line.avi")}
    camera = http.post("/cameras", json={"name": "press 9", "settings": settings}, headers=headers).json()
    page.set_viewport_size({"width": 1366, "height": 800})
    login(page, server, f"live?camera={camera['id']}")
    form = page.get_by_test_id("camera-settings")
    form.get_by_test_id("camera-engine").select_option("onnxruntime")
    form.get_by_test_id("camera-save").click()
    expect(page.get_by_test_id("toast").last).to_have_text("Camera settings saved")
    assert http.get(f"/cameras/{camera['id']}", headers=headers).json()["settings"]["engine"] == "onnxruntime"
    form.get_by_test_id("camera-engine").select_option("tensorrt")  # not on this box: refused, said why
    form.get_by_test_id("camera-save").click()
    expect(page.get_by_test_id("camera-settings-error")).to_contain_text(
        "settings.engine: this box has no tensorrt"
    )
    assert http.get(f"/cameras/{camera['id']}", headers=headers).json()["settings"]["engine"] == "onnxruntime"
