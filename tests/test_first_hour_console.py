"""What a new line engineer tripped over in the first hour (issue 23), done again in a real Chromium at 1366x768
against a real server: a misspelt rule class, deploying a model marked not usable or one without the rules'
classes, Deploy off before an export, rule errors in the API's words, "Send to dataset" in error red, the
webhook row that said two things at once, an image size that makes the objects vanish, undo after "Copy
previous", the setup page's backticks, the outputs manual the console could not open, and the camera tile
that wrapped its name. (The Live page with a running camera: tests/test_live_first_hour.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from appliance.config import Config, load_config
from appliance.db import Database, open_database, write_transaction
from appliance.inference.pipeline import Detection
from appliance.outputs import outbox
from appliance.stations import events
from appliance.stations.contracts import InspectionEvent
from tests.console_support import login, open_labeler, served, wait_saved
from tests.helpers import ServerProcess, wait_js
from tests.line_peers import BoxProcess, WebhookReceiver
from tests.test_rule_classes import model

pytestmark = pytest.mark.browser

OK_COLOUR = "rgb(81, 207, 102)"  # --ok
ERROR_COLOUR = "rgb(255, 107, 107)"  # --danger
KEY = "webhook-hmac-key-0123456789"


def rule(name: str, classes: list[str], **fields: Any) -> dict[str, Any]:
    return {"name": name, "classes": classes, "condition": "present", **fields}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("first-hour")
    with served(root) as (server, api):
        config = load_config(env={}, data_dir=str(server.data_dir))
        db = open_database(config.db_path)
        # A camera saved before any model was deployed, its rule with the typo the user made.
        camera = api.call(
            "POST",
            "/cameras",
            json={"name": "Station / A", "settings": {"source": "/media/usb/line.avi",
                  "rules": [rule("one circle", ["circel"])]}},
        )  # fmt: skip
        shapes = model(db, config, root, ["circle", "square"])
        weak = model(db, config, root, ["circle", "square"], map50=0.001)
        bolts = model(db, config, root, ["bolt", "nut"])
        fresh = model(db, config, root, ["circle", "square"], export=False)
        with write_transaction(db):
            db.execute("UPDATE models SET name = 'three epochs' WHERE id = ?", [weak])
            db.execute("UPDATE models SET name = 'bolts and nuts' WHERE id = ?", [bolts])
            db.execute("UPDATE models SET name = 'not exported' WHERE id = ?", [fresh])
        api.call("POST", f"/models/{shapes}/deploy", json={"deploy_anyway": True})
        yield {"server": server, "api": api, "config": config, "db": db, "root": root, "camera": camera["id"],
               "shapes": shapes, "weak": weak, "bolts": bolts, "fresh": fresh}  # fmt: skip
        db.conn.close()


def deploy_shapes(site: dict[str, Any]) -> None:
    site["api"].call("POST", f"/models/{site['shapes']}/deploy", json={"deploy_anyway": True})


def set_rules(site: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    """Rules straight into the catalog, as an older version stored them (unchecked)."""
    with write_transaction(site["db"]):
        row = site["db"].execute("SELECT settings FROM cameras WHERE id = ?", [site["camera"]]).fetchone()
        settings = {**json.loads(row[0]), "rules": rules}
        site["db"].execute(
            "UPDATE cameras SET settings = ?, updated_at = ? WHERE id = ?",
            [json.dumps(settings), str(time.time()), site["camera"]],
        )


def row_of(page: Page, model_id: int) -> Any:
    return page.locator(f"[data-testid=model-row][data-id='{model_id}']")


# --- item 1 and 9: rule classes from the model, refusals next to the field ----------------------------


def test_rule_classes_come_from_the_model_and_a_typo_is_refused_next_to_the_rule(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    deploy_shapes(site)
    set_rules(site, [rule("one circle", ["circel"])])
    api = site["api"]
    login(page, site["server"], f"live?camera={site['camera']}")
    expect(page.get_by_test_id("rules-model")).to_contain_text("Classes come from model shapes")
    picker = page.get_by_test_id("rule-classes").first
    # No text field to type a class into: the model's classes are offered, the typo is marked.
    expect(page.get_by_test_id("rules-table").locator("input[name=classes]")).to_have_count(0)
    expect(picker.get_by_test_id("rule-classes-summary")).to_have_text("circel")
    picker.get_by_test_id("rule-classes-summary").click()
    options = picker.get_by_test_id("rule-class-option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
        "circle",
        "square",
        "circel",
    ]
    expect(picker.locator("label.missing")).to_contain_text("circel (not in the model)")
    page.screenshot(path=artifacts_dir / "first-hour-rule-classes.png")
    # Saved as it is: refused, with the model's classes, in a sentence under that rule.
    page.get_by_test_id("rules-save").click()
    refusal = page.get_by_test_id("rule-field-error")
    expect(refusal).to_contain_text(
        "Rule “one circle”, Classes: 'circel' is not a class of model "
        f"{site['shapes']} (shapes); its classes are: circle, square."
    )
    expect(page.get_by_test_id("rules-error")).to_have_text("")
    assert "settings.rules" not in (refusal.text_content() or "")
    refusal.scroll_into_view_if_needed()
    page.screenshot(path=artifacts_dir / "first-hour-rule-refused.png")
    # The user opens the list again, unticks the typo and ticks the model's class: saved.
    picker.get_by_test_id("rule-classes-summary").click()
    picker.locator("input[value=circel]").uncheck()
    picker.locator("input[value=circle]").check()
    expect(picker.get_by_test_id("rule-classes-summary")).to_have_text("circle")
    page.get_by_test_id("rules-save").click()
    expect(page.get_by_test_id("toast").last).to_contain_text("Rules saved")
    expect(refusal).to_have_count(0)
    stored = api.call("GET", f"/cameras/{site['camera']}")["settings"]["rules"]
    assert stored[0]["classes"] == ["circle"]

    # A rule API words would have described as "settings.rules[1].max_count: ...": a sentence at its field.
    page.get_by_test_id("rule-add").click()
    added = page.get_by_test_id("rule-row").last
    added.locator("[name=name]").fill("a few squares")
    added.locator("[name=condition]").select_option("between")
    page.get_by_test_id("rules-save").click()
    expect(refusal).to_have_text(
        "Rule “a few squares”, Max: a 'between' rule needs Max, and passes while the number found is from "
        "Count to Max."
    )
    expect(added.locator("[name=max_count]")).to_have_class("invalid")
    added.locator("[name=max_count]").fill("3")
    page.get_by_test_id("rules-save").click()
    expect(refusal).to_have_count(0)
    assert len(api.call("GET", f"/cameras/{site['camera']}")["settings"]["rules"]) == 2
    assert [e for e in watched["errors"] if "status of 422" not in e] == []


# --- item 1, 2, 8: deploy asks first; the warning stays readable; Deploy off says why --------------------


def badge_readable(page: Page, model_id: int, testid: str) -> bool:
    """The badge shows its whole text inside the model's name cell (not cut to '···')."""
    return bool(
        page.evaluate(
            """([id, testid]) => {
              const row = document.querySelector(`[data-testid=model-row][data-id='${id}']`);
              const badge = row.querySelector(`[data-testid=${testid}]`);
              const cell = row.querySelector('td.model-name').getBoundingClientRect();
              const b = badge.getBoundingClientRect();
              return badge.scrollWidth <= badge.clientWidth && b.width > 20 && b.left >= cell.left && b.right <= cell.right;
            }""",
            [model_id, testid],
        )
    )


def test_deploy_asks_first_and_names_the_reason_and_the_rules_it_breaks(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    deploy_shapes(site)
    set_rules(site, [rule("one circle", ["circle"])])
    api = site["api"]
    login(page, site["server"], "models")
    weak = row_of(page, site["weak"])
    expect(weak.get_by_test_id("unusable-badge")).to_have_text("not usable")
    # A model marked not usable: Deploy asks, with the reason; Cancel leaves everything as it was.
    weak.get_by_test_id("deploy").click()
    dialog = page.get_by_test_id("deploy-confirm")
    expect(dialog.get_by_test_id("deploy-unusable")).to_contain_text(
        "Not usable. mAP50 0.001 on its validation images after 3 epochs: it finds (almost) nothing"
    )
    expect(dialog.get_by_test_id("deploy-broken-rules")).to_have_count(0)
    dialog.get_by_test_id("confirm-cancel").click()
    expect(dialog).to_have_count(0)
    assert api.call("GET", f"/models/{site['weak']}")["deployed"] is False
    weak.get_by_test_id("deploy").click()
    dialog.get_by_test_id("confirm-ok").click()
    expect(weak.get_by_test_id("deployed-badge")).to_be_visible()
    assert api.call("GET", f"/models/{site['weak']}")["deployed"] is True
    # Deployed and not usable: both badges whole, the warning readable on the row.
    assert badge_readable(page, site["weak"], "unusable-badge")
    assert badge_readable(page, site["weak"], "deployed-badge")

    # A model without the class the camera's rule counts: Deploy names the camera and the rule.
    bolts = row_of(page, site["bolts"])
    bolts.get_by_test_id("deploy").click()
    expect(dialog.get_by_test_id("deploy-broken-rule")).to_have_text(
        "camera Station / A: rule “one circle” counts “circle”"
    )
    expect(dialog).to_contain_text("Its classes (bolt, nut)")
    page.screenshot(path=artifacts_dir / "first-hour-deploy-confirm.png")
    expect(dialog.get_by_test_id("confirm-ok")).to_have_text("Deploy anyway")
    dialog.get_by_test_id("confirm-ok").click()
    expect(bolts.get_by_test_id("deployed-badge")).to_be_visible()
    assert api.call("GET", f"/models/{site['bolts']}")["deployed"] is True

    # Deploy is off before an export, and the row says why in words.
    fresh = row_of(page, site["fresh"])
    expect(fresh.get_by_test_id("deploy")).to_be_disabled()
    expect(fresh.get_by_test_id("deploy-reason")).to_have_text("Deploy: export the model first (Export ONNX)")
    assert watched["errors"] == []


# --- item 5: success in the success style -----------------------------------------------------------------


def snapshot_event(config: Config, db: Database, camera_id: int) -> int:
    """An inspection event with its snapshot on disk, as the camera's event writer leaves it."""
    relpath = f"{camera_id}/20260101/first-hour.jpg"
    path = config.data_path / "events" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((240, 320, 3), 90, np.uint8)
    cv2.circle(image, (100, 100), 30, (40, 40, 230), -1)
    path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    event = InspectionEvent(
        camera_id=camera_id, ts=time.time(), mode="triggered", verdict="ok", width=320, height=240,
        detections=[Detection(0, "circle", 0.9, 70, 70, 130, 130)], snapshot=relpath,
        snapshot_bytes=path.stat().st_size,
    )  # fmt: skip
    return events.record_events(db, [event])[0]


def test_send_to_dataset_says_its_success_in_the_success_style(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    api = site["api"]
    dataset = api.dataset(name="hard cases", classes=["circle", "square"])
    event_id = snapshot_event(site["config"], site["db"], site["camera"])
    login(page, site["server"], "events")
    page.locator(f"[data-testid=event-row][data-id='{event_id}']").click()
    expect(page.get_by_test_id("event-detail")).to_contain_text(f"Event {event_id}")
    page.get_by_test_id("event-dataset").select_option(str(dataset["id"]))
    page.get_by_test_id("event-send").click()
    message = page.get_by_test_id("event-send-result")
    expect(message).to_contain_text("with 1 pre-label to review")
    expect(message).to_have_css("color", OK_COLOUR)
    expect(message).not_to_have_class("form-error")
    assert watched["errors"] == []


# --- item 6: one state per output row, the latest first, with its time -------------------------------------


def test_a_webhook_row_says_one_state_the_latest_with_its_time(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    config, db, api = site["config"], site["db"], site["api"]
    receiver = WebhookReceiver(KEY).start()
    process = BoxProcess("outputs", config).start()
    outbox.install(config)  # events recorded by this test go to the outbox, as the camera's writer does
    try:
        created = api.call("POST", "/outputs", json={"name": "mes", "settings": {"kind": "webhook",
                           "url": receiver.url, "secret": KEY}})  # fmt: skip
        login(page, site["server"], "outputs")
        row = page.locator(f"[data-testid=output-row][data-id='{created['id']}']")
        status = row.get_by_test_id("output-status")
        # Nothing sent yet: waiting, not an amber "not connected".
        expect(status).to_have_attribute("data-state", "idle", timeout=15_000)
        expect(status).not_to_contain_text("not connected")
        row.get_by_test_id("output-test").click()
        expect(row.get_by_test_id("output-state")).to_contain_text("Test OK: POST")
        expect(status).to_have_attribute("data-state", "ok")
        expect(row.get_by_test_id("output-connected")).to_have_text("OK")
        # A delivered event is the latest state...
        first = events.record_events(db, [InspectionEvent(camera_id=site["camera"], ts=time.time(),
                                                            mode="triggered", verdict="ok")])[0]  # fmt: skip
        expect(row.get_by_test_id("output-state")).to_contain_text(f"delivered event {first}", timeout=15_000)
        # ... until the receiver is down: then the failure, alone, with its time.
        receiver.stop()
        events.record_events(db, [InspectionEvent(camera_id=site["camera"], ts=time.time(), mode="triggered",
                                                  verdict="ng")])  # fmt: skip
        expect(status).to_have_attribute("data-state", "bad", timeout=15_000)
        state = row.get_by_test_id("output-state")
        expect(state).to_contain_text("Connection refused")
        expect(state).to_contain_text("s ago")
        expect(state).not_to_contain_text("delivered")
        expect(row.get_by_test_id("output-disconnected")).to_have_text("failing")
        expect(status.locator("[data-testid=output-state]")).to_have_count(1)
        assert (state.get_attribute("title") or "").startswith(
            tuple(f"{n} s ago: delivered" for n in range(30))
        )
    finally:
        process.stop()
        receiver.stop()
    assert watched["errors"] == []


# --- item 7: an image size that makes the objects vanish -----------------------------------------------------


def test_the_train_page_warns_when_the_objects_would_vanish_at_the_chosen_size(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    api = site["api"]
    dataset = api.dataset(name="parts 320x240", classes=["circle", "square"])
    for i, image in enumerate(api.upload(dataset["id"], 4)):
        side = 30 + 12 * i  # 30-66 px objects in 320x240 images
        box = {"class_id": i % 2, "x1": 40, "y1": 40, "x2": 40 + side, "y2": 40 + side}
        api.call("PUT", f"/images/{image['id']}/annotations", json={"version": 0, "boxes": [box]})
    login(page, site["server"], f"training?dataset={dataset['id']}")
    warnings = page.get_by_test_id("plan-warnings")
    expect(page.get_by_test_id("plan-counts")).to_contain_text("4 labeled images, 4 boxes")
    page.get_by_test_id("train-imgsz").fill("32")
    expect(warnings).to_contain_text("At 32 px the median labeled object is about 4.8 px")
    expect(warnings).to_contain_text("under 8 px the model cannot learn to find it")
    expect(warnings).to_contain_text("Use 128 px or more")
    page.get_by_test_id("train-imgsz").fill("320")
    expect(page.get_by_test_id("plan-estimate")).to_contain_text("at most")
    expect(page.locator("[data-testid=plan-warning]", has_text="median labeled object")).to_have_count(0)
    assert watched["errors"] == []


# --- item 10: undo after "Copy previous" -------------------------------------------------------------------


def test_undo_of_copy_previous_leaves_the_image_unlabeled_again(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]]
) -> None:
    api, server = site["api"], site["server"]
    dataset = api.dataset(name="copy and undo", classes=["circle", "square"])
    first, second = (int(i["id"]) for i in api.upload(dataset["id"], 2))
    box = {"class_id": 1, "x1": 20, "y1": 30, "x2": 90, "y2": 100}
    api.call("PUT", f"/images/{first}/annotations", json={"version": 0, "boxes": [box]})
    login(page, server)
    open_labeler(page, server, dataset["id"], second)
    assert api.boxes(second)["status"] == "unlabeled"
    page.get_by_test_id("copy-previous").click()
    wait_js(page, "window.__labeler.boxes.length === 1")
    wait_saved(page)
    copied = api.boxes(second)
    assert copied["status"] == "labeled" and len(copied["boxes"]) == 1
    page.keyboard.press("Control+z")
    wait_js(page, "window.__labeler.boxes.length === 0")
    wait_saved(page)
    undone = api.boxes(second)
    assert (undone["status"], undone["boxes"]) == ("unlabeled", [])
    assert page.evaluate("window.__labeler.status") == "unlabeled"
    page.keyboard.press("Control+Shift+z")  # redo brings the copy and its status back
    wait_js(page, "window.__labeler.boxes.length === 1")
    wait_saved(page)
    redone = api.boxes(second)
    assert redone["status"] == "labeled" and len(redone["boxes"]) == 1
    assert watched["errors"] == []


# --- item 11: the small things -------------------------------------------------------------------------


def test_setup_text_manual_links_and_a_camera_tile_that_keeps_its_name_on_one_line(
    page: Page, site: dict[str, Any], watched: dict[str, list[str]], tmp_path: Path
) -> None:
    with ServerProcess(tmp_path / "fresh") as fresh:
        page.goto(fresh.url + "/")
        help_text = page.get_by_test_id("setup-code-help")
        expect(help_text).to_contain_text("on its terminal (make run)")
        assert "`" not in (help_text.text_content() or "")
        expect(help_text.locator("code", has_text="make run")).to_have_count(1)

    login(page, site["server"], "outputs")
    page.get_by_test_id("manual-modbus").click()
    expect(page.get_by_test_id("manual-title")).to_have_text(
        "Line outputs: MQTT, OPC UA, Modbus TCP, webhooks"
    )
    heading = page.locator("h3[id^=modbus-tcp-server]")
    expect(heading).to_be_in_viewport()
    registers = page.locator(".manual table", has_text="verdict: 0 none yet, 1 ok, 2 ng")
    expect(registers).to_be_visible()
    expect(registers.locator("th")).to_have_text(["offset", "registers", "value"])
    page.go_back()
    page.get_by_test_id("manual-mqtt").click()
    expect(page.locator(".manual table", has_text="<prefix>/<box_id>/status")).to_be_in_viewport()
    assert site["api"].http.get("/manuals/..%2Fpyproject", headers=site["api"].headers).status_code == 404

    page.goto(f"{site['server'].url}/#/live?camera={site['camera']}")
    name = page.get_by_test_id("tile-name").first
    expect(name).to_have_text("Station / A")
    lines = page.evaluate(
        """() => { const el = document.querySelector('[data-testid=tile-name]');
                   const r = document.createRange(); r.selectNodeContents(el);
                   return [new Set([...r.getClientRects()].map((q) => Math.round(q.top))).size, el.scrollWidth <= el.clientWidth]; }"""
    )
    assert lines == [1, True], lines
    assert watched["errors"] == []
