"""Every console page at 1366x768 (issue 14): a screenshot of each in test-artifacts/, no element wider than the
window, the page's main action visible without scrolling, no literal "null"; and the items the issue found on the
Train, Models, Try-it and routing pages, checked in a real Chromium against a real server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from appliance.config import load_config
from appliance.db import open_database, write_transaction
from tests.console_support import fill_form, login, served
from tests.helpers import ADMIN, ServerProcess, wait_js
from tests.inference_support import insert_model
from tests.test_model_visibility import add_onnx_export

pytestmark = pytest.mark.browser

WEIGHTS = b"weights the test's pinned list knows"

# Elements sticking out of the window, the main action's box, and a literal "null" in the page's text.
LAYOUT = """(testid) => {
  const vw = document.documentElement.clientWidth, vh = window.innerHeight;
  const name = (e) => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')}[${e.dataset.testid || ''}]`;
  const wide = [...document.querySelectorAll('body *')].filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && (r.right > vw + 0.5 || r.left < -0.5);
  }).map(name);
  const el = document.querySelector(`[data-testid="${testid}"]`);
  const r = el ? el.getBoundingClientRect() : null;
  const visible = !!r && r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= vh && r.right <= vw;
  return { wide: wide.slice(0, 8), visible, box: r && [r.left, r.top, r.right, r.bottom], scrolled: window.scrollY,
           overflowX: document.documentElement.scrollWidth - vw,
           nullText: /(^|\\s)null(\\s|$)/.test(document.getElementById('page').innerText) };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("pages")
    media = root / "media" / "STICK"
    media.mkdir(parents=True)
    (media / "yolo-test.pt").write_bytes(WEIGHTS)
    (media / "random.pt").write_bytes(b"nobody pinned this")
    pinned = root / "weights.sha256"
    pinned.write_text(f"{hashlib.sha256(WEIGHTS).hexdigest()}  yolo-test.pt\n")
    env = {"APPLIANCE_IMPORT_ROOTS": str(root / "media"), "APPLIANCE_WEIGHTS_CHECKSUMS": str(pinned)}
    with served(root, env) as (server, api):
        dataset = api.dataset(name="line 4")
        images = [int(i["id"]) for i in api.upload(dataset["id"], 6)]
        for image_id in images[:3]:
            box = {"class_id": 0, "x1": 10, "y1": 10, "x2": 80, "y2": 70}
            api.call("PUT", f"/images/{image_id}/annotations", json={"version": 0, "boxes": [box]})
        job = api.call(
            "POST", "/training-jobs", json={"dataset_id": dataset["id"], "epochs": 3, "imgsz": 320}
        )
        config = load_config(env={}, data_dir=str(server.data_dir))
        db = open_database(config.db_path)
        weights = root / "best.pt"
        weights.write_bytes(b"not loaded by these tests")
        model_id = insert_model(
            db, config, weights, name="line 4 nano", imgsz=64, metrics={"map50": 0.62, "map50_95": 0.41}
        )
        add_onnx_export(db, config, model_id)
        weak = insert_model(
            db, config, weights, name="three epochs", imgsz=64, metrics={"map50": 0.001, "map50_95": 0.0}
        )
        result = {"metrics": {"map50": 0.001, "map50_95": 0.0}, "epochs_done": 3, "model_id": weak,
                  "snapshot": {"images": 14, "val_images": 3}}  # fmt: skip
        with write_transaction(db):
            db.execute("UPDATE models SET owner_id = 1")
            done = db.execute(
                """INSERT INTO jobs (kind, status, dataset_id, model_id, params, result, created_by, created_at, finished_at)
                   VALUES ('train', 'completed', ?, ?, ?, ?, 1, '2026-01-01T00:00:00Z', '2026-01-01T00:05:00Z')""",
                [dataset["id"], weak, json.dumps({"base_model": "yolov8n.yaml", "epochs": 3, "imgsz": 320, "batch": 8}),
                 json.dumps(result)],
            ).lastrowid  # fmt: skip
        db.conn.close()
        yield {"server": server, "api": api, "dataset": dataset["id"], "images": images, "job": job["id"],
               "done": done, "model": model_id, "weak": weak, "media": media}  # fmt: skip


def check_page(page: Page, artifacts: Path, name: str, main: str) -> None:
    expect(page.get_by_test_id(main).first).to_be_visible()
    page.wait_for_timeout(150)  # late layout (fonts, a debounced request) settles
    page.screenshot(path=artifacts / f"page-{name}.png")
    layout = page.evaluate(LAYOUT, main)
    assert layout["wide"] == [] and layout["overflowX"] <= 0, (name, layout)
    assert layout["visible"] and layout["scrolled"] == 0, (name, main, layout)
    assert not layout["nullText"], (name, "a literal null is shown")


def test_every_page_fits_1366x768_with_its_main_action_visible(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]], artifacts_dir: Path, tmp_path: Path
) -> None:
    with ServerProcess(tmp_path / "fresh") as fresh:  # the first-run page needs a box without accounts
        page.goto(fresh.url + "/")
        check_page(page, artifacts_dir, "setup", "setup-submit")
    server, dataset = site["server"], site["dataset"]
    page.goto(server.url + "/#/login")
    check_page(page, artifacts_dir, "login", "login-submit")
    login(page, server)
    pages = [
        ("datasets", "#/datasets", "new-dataset"),
        ("images", f"#/datasets/{dataset}", "upload-button"),
        ("label", f"#/datasets/{dataset}/label/{site['images'][0]}", "label-canvas"),
        ("stats", f"#/datasets/{dataset}/stats", "stat-boxes"),
        ("settings", f"#/datasets/{dataset}/settings", "settings-save"),
        ("import", f"#/imports?dataset={dataset}", "archive-upload"),
        ("train", "#/training", "train-start"),
        ("train-job-pending", f"#/training/{site['job']}", "job-cancel"),
        ("train-job-unusable", f"#/training/{site['done']}", "job-unusable"),
        ("models", "#/models", "deploy"),
        ("try", "#/try", "try-file"),
        ("live", "#/live", "live-page"),
        ("events", "#/events", "events-verdict"),
        ("outputs", "#/outputs", "output-add"),
        ("users", "#/users", "user-create"),
        ("manual", "#/manual/console", "manual-title"),  # outputs.md names JSON null: the check would flag it
        ("audit", "#/audit", "audit-verify"),
    ]
    for name, route, main in pages:
        page.goto(f"{server.url}/{route}")
        check_page(page, artifacts_dir, name, main)
    assert watched["dialogs"] == []
    assert [e for e in watched["errors"] if "favicon" not in e] == []


def test_train_page_tells_what_the_training_will_use_and_take(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server, dataset = site["server"], site["dataset"]
    login(page, server, f"training?dataset={dataset}")
    # The picker counts what training takes: labeled images.
    expect(page.get_by_test_id("train-dataset").locator("option")).to_contain_text(
        ["line 4 (3 labeled of 6)"]
    )
    # No GPU on this machine (GET /system): no "GPU 0" to choose.
    options = page.get_by_test_id("train-device").locator("option").all_text_contents()
    assert options == ["auto (CPU, no GPU)", "CPU"], options
    page.get_by_test_id("train-base").select_option("yolov8n.yaml")
    expect(page.get_by_test_id("plan-counts")).to_contain_text("3 labeled images, 3 boxes")
    classes = page.get_by_test_id("plan-class")
    expect(classes).to_have_count(2)
    expect(classes.nth(0)).to_contain_text("bolt")
    expect(classes.nth(1)).to_contain_text("nut")
    warnings = page.get_by_test_id("plan-warnings")
    expect(warnings).to_contain_text("from scratch on 3 labeled images")
    expect(warnings).to_contain_text("'nut' has no labeled box")
    estimate = page.get_by_test_id("plan-estimate")
    expect(estimate).to_contain_text("at most on the CPU")
    expect(estimate).to_contain_text("How: no training has finished on this box yet")
    expect(page.get_by_test_id("plan-engine")).to_contain_text("PyTorch (ultralytics) on ")  # the CPU by name
    expect(page.get_by_test_id("plan-inference")).to_contain_text("then runs on openvino here")
    page.get_by_test_id("plan-use").click()
    expect(page.get_by_test_id("train-epochs")).to_have_value("300")
    expect(page.get_by_test_id("train-imgsz")).to_have_value("320")
    page.get_by_test_id("train-epochs").fill("3")
    expect(warnings).to_contain_text("3 epochs is very few")

    # Base weights from the USB drive: the pinned file is taken, another one is refused next to its button.
    expect(page.get_by_test_id("weights-none")).to_be_visible()
    page.get_by_test_id("weights-find").click()
    candidates = page.get_by_test_id("weights-candidate")
    expect(candidates).to_have_count(2)
    page.locator("[data-testid=weights-candidate][data-path$='random.pt']").get_by_test_id(
        "weights-import"
    ).click()
    message = page.get_by_test_id("weights-message")
    expect(message).to_contain_text("not in the list of known base weights")
    assert "form-error" in (message.get_attribute("class") or "")
    page.locator("[data-testid=weights-candidate][data-path$='yolo-test.pt']").get_by_test_id(
        "weights-import"
    ).click()
    expect(message).to_contain_text("Imported yolo-test.pt")
    expect(page.get_by_test_id("weights-file")).to_contain_text("checksum pinned")
    # The imported weights become the base model, and the plan drops its "from scratch" warning.
    expect(page.get_by_test_id("train-base")).to_have_value("weights:yolo-test.pt")
    expect(page.get_by_test_id("plan-warnings")).not_to_contain_text("from scratch")
    weights_dir = site["server"].data_dir / "weights"
    assert sorted(p.name for p in weights_dir.iterdir()) == ["yolo-test.pt"]
    assert [e for e in watched["errors"] if "status of 422" not in e] == []  # the refused import's answer


def test_a_finished_training_that_found_nothing_says_not_usable(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server = site["server"]
    login(page, server, f"training/{site['done']}")
    notice = page.get_by_test_id("job-unusable")
    expect(notice).to_contain_text("Not usable: mAP50 0.001")
    expect(notice).to_contain_text("only 3 epochs")
    expect(notice).to_contain_text("trained from scratch")
    page.goto(f"{server.url}/#/training")
    row = page.locator(f"[data-testid=job-row][data-id='{site['done']}']")
    expect(row.get_by_test_id("job-unusable-badge")).to_be_visible()
    page.goto(f"{server.url}/#/models")
    weak = page.locator(f"[data-testid=model-row][data-id='{site['weak']}']")
    expect(weak.get_by_test_id("unusable-badge")).to_be_visible()
    assert watched["errors"] == []


def test_models_page_engine_off_with_reason_download_undeploy_delete_and_steady_rows(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server, api = site["server"], site["api"]
    login(page, server, "models")
    row = page.locator(f"[data-testid=model-row][data-id='{site['model']}']")
    engine = row.get_by_test_id("export-engine")
    expect(engine).to_be_disabled()
    assert "TensorRT" in (engine.get_attribute("title") or "")
    expect(page.get_by_test_id("engine-unavailable")).to_contain_text("Export TensorRT is off")
    # Disabled looks disabled: not the colours of the active buttons.
    styles = page.evaluate(
        """() => ['export-engine', 'export-onnx'].map((id) => {
             const s = getComputedStyle(document.querySelector(`[data-testid=${id}]`));
             return [s.opacity, s.borderStyle, s.backgroundColor]; })"""
    )
    assert styles[0] != styles[1], styles
    # The ONNX file downloads.
    link = row.get_by_test_id("download-onnx")
    got = page.request.get(server.url + (link.get_attribute("href") or ""))
    assert got.ok and got.body() == b"onnx bytes of model %d" % site["model"]
    # Rows keep their height while an export runs.
    before = row.bounding_box()
    weak = page.locator(f"[data-testid=model-row][data-id='{site['weak']}']")
    weak.get_by_test_id("export-onnx").click()
    expect(weak.get_by_test_id("export-badge")).to_contain_text("pending")
    expect(weak.get_by_test_id("cancel-export")).to_be_visible()
    assert before and abs((weak.bounding_box() or {"height": 0})["height"] - before["height"]) <= 2
    weak.get_by_test_id("cancel-export").click()
    expect(weak.get_by_test_id("export-badge").first).to_contain_text("cancelled")
    # Deploy, then the deployed model cannot be deleted; undeploy, then delete (confirmed) removes it.
    row.get_by_test_id("deploy").click()
    expect(row.get_by_test_id("deployed-badge")).to_be_visible()
    expect(row.get_by_test_id("delete-model")).to_be_disabled()
    row.get_by_test_id("undeploy").click()
    expect(row.get_by_test_id("deployed-badge")).to_have_count(0)
    assert api.call("GET", f"/models/{site['model']}")["deployed"] is False
    weak.get_by_test_id("delete-model").click()
    page.get_by_test_id("confirm-ok").click()
    expect(weak).to_have_count(0)
    assert api.http.get(f"/models/{site['weak']}", headers=api.headers).status_code == 404
    assert watched["errors"] == []


def test_try_it_error_leaves_no_result_on_screen(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]], tmp_path: Path
) -> None:
    server = site["server"]
    login(page, server, "try")
    expect(page.get_by_test_id("try-model").locator("option")).not_to_have_count(0)
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image")
    page.get_by_test_id("try-file").set_input_files(str(bad))
    status = page.get_by_test_id("try-status")
    expect(status).to_contain_text("notes.jpg:")
    assert "form-error" in (status.get_attribute("class") or "")
    expect(page.get_by_test_id("try-canvas")).to_be_hidden()
    expect(page.get_by_test_id("try-detection")).to_have_count(0)
    watched["errors"] = [e for e in watched["errors"] if "status of 4" not in e]  # the refused request itself
    assert watched["errors"] == []


def test_logout_and_setup_routes_show_their_own_address(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    server = site["server"]
    login(page, server, "datasets")
    expect(page.get_by_test_id("nav-datasets")).to_be_visible()
    page.goto(f"{server.url}/#/setup")  # setup is done: logged in, the datasets instead
    wait_js(page, "location.hash === '#/datasets'")
    expect(page.get_by_test_id("new-dataset")).to_be_visible()
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    wait_js(page, "location.hash === '#/login'")
    page.goto(f"{server.url}/#/setup")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    wait_js(page, "location.hash === '#/login'")
    # A deep link while logged out comes back after the login.
    page.goto(f"{server.url}/#/models")
    wait_js(page, "location.hash === '#/login'")
    fill_form(page, {"login-username": ADMIN["username"], "login-password": ADMIN["password"]})
    page.get_by_test_id("login-submit").click()
    wait_js(page, "location.hash === '#/models'")
    assert watched["dialogs"] == []
