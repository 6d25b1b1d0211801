"""The web console in a real Chromium against a real `appliance serve`: setup, datasets, uploads, labeling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console_support import (
    Api,
    H,
    W,
    add_rows,
    assert_boxes,
    click_image,
    drag,
    fill_form,
    label_new_images,
    login,
    open_labeler,
    served,
    wait_saved,
)
from tests.helpers import ADMIN, API, ServerProcess, auth, fresh_setup_code, image_bytes, wait_js

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Api]]:
    """One real server for the labeling tests (each test makes its own dataset); starting one costs seconds."""
    with served(tmp_path_factory.mktemp("console")) as site:
        yield site


@pytest.fixture
def console(console_site: tuple[ServerProcess, Api]) -> ServerProcess:
    return console_site[0]


@pytest.fixture
def api(console_site: tuple[ServerProcess, Api], request: pytest.FixtureRequest) -> Api:
    admin_api = console_site[1]
    admin_api.name = request.node.name.split("[")[0][:60]
    return admin_api


# --- tests ---------------------------------------------------------------------------------------


def test_first_run_setup_then_logout_and_login(
    page: Page, server: ServerProcess, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    failed: list[str] = []
    page.on(
        "response",
        lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 and "/api/" in r.url else None,
    )
    page.goto(server.url + "/")
    expect(page.get_by_test_id("setup-form")).to_be_visible()
    assert failed == []  # the first load asks /auth/session, which never answers 401
    expect(page.get_by_test_id("setup-code-help")).to_contain_text("appliance setup-code")
    page.screenshot(path=artifacts_dir / "console-setup.png")
    fill_form(page, {"setup-code": "AAAA-BBBB-CCCC", "setup-username": "chief",
                     "setup-password": "chief-password-1", "setup-repeat": "chief-password-1"})  # fmt: skip
    page.get_by_test_id("setup-submit").click()
    expect(page.get_by_test_id("setup-error")).to_contain_text("setup code")
    page.get_by_test_id("setup-code").fill(fresh_setup_code(server.data_dir / "appliance.db"))
    page.get_by_test_id("setup-submit").click()
    expect(page.get_by_test_id("no-datasets")).to_be_visible()
    expect(page.get_by_test_id("current-user")).to_have_text("chief")
    # No worker runs beside this server: the console says jobs will wait, and why.
    expect(page.get_by_test_id("status-warning").first).to_contain_text(
        "No worker is running: jobs will wait"
    )
    watched["errors"] = [e for e in watched["errors"] if "403" not in e]  # the wrong code's answer

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.goto(server.url + "/#/setup")  # setup is done: the console sends us to the login instead
    expect(page.get_by_test_id("login-form")).to_be_visible()
    fill_form(page, {"login-username": "chief", "login-password": "wrong-password"})
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).not_to_be_empty()
    page.get_by_test_id("login-password").fill("chief-password-1")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("nav-datasets")).to_be_visible()
    page.screenshot(path=artifacts_dir / "console-datasets-empty.png")
    assert watched["dialogs"] == []


def test_create_dataset_upload_with_duplicate_and_rejected(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    login(page, console, "datasets")
    page.get_by_test_id("new-dataset").click()
    page.get_by_test_id("dataset-name").fill("line 4")
    page.get_by_test_id("class-name").first.fill("scratch")
    page.get_by_test_id("class-add").click()
    page.get_by_test_id("class-name").nth(1).fill("dent")
    page.get_by_test_id("class-color").nth(1).fill("#00ff00")
    page.get_by_test_id("dataset-create-submit").click()
    expect(page.get_by_test_id("dataset-title")).to_have_text("line 4")

    datasets = api.call("GET", "/datasets")
    assert [(c["name"], c["color"]) for c in datasets[0]["classes"]] == [
        ("scratch", "#ff6b6b"),
        ("dent", "#00ff00"),
    ]
    files = [
        {"name": f"ok-{i}.jpg", "mimeType": "image/jpeg", "buffer": image_bytes(W, H, seed=i)}
        for i in range(3)
    ]
    files.append({"name": "again.jpg", "mimeType": "image/jpeg", "buffer": image_bytes(W, H, seed=0)})
    files.append({"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"this is not an image"})
    page.get_by_test_id("upload-input").set_input_files(files)
    summary = page.get_by_test_id("upload-summary")
    expect(summary).to_be_visible()
    expect(page.get_by_test_id("summary-added")).to_have_text("3")
    expect(page.get_by_test_id("summary-duplicates")).to_have_text("1")
    expect(page.get_by_test_id("summary-rejected")).to_have_text("1")
    rejected = page.get_by_test_id("rejected-item")
    expect(rejected).to_have_count(1)
    expect(rejected).to_contain_text("notes.jpg")
    expect(rejected).to_contain_text("not an image")
    expect(page.get_by_test_id("batch-progress")).to_have_attribute("value", "1")
    expect(page.locator("[data-testid=thumb][data-image-id]")).to_have_count(3)
    expect(page.get_by_test_id("count-all")).to_have_text("3")
    expect(page.get_by_test_id("count-unlabeled")).to_have_text("3")
    wait_js(
        page,
        "[...document.querySelectorAll('[data-testid=thumb] img')].every(i => i.complete && i.naturalWidth)",
    )
    page.screenshot(path=artifacts_dir / "console-dataset-grid.png")

    # Settings: public toggle and a class rename go through PATCH.
    page.get_by_test_id("tab-settings").click()
    page.get_by_test_id("settings-public").check()
    page.get_by_test_id("class-name").first.fill("deep scratch")
    page.get_by_test_id("settings-save").click()
    expect(page.get_by_test_id("toast").last).to_have_text("Dataset saved")
    stored = api.call("GET", f"/datasets/{datasets[0]['id']}")
    assert stored["is_public"] is True and stored["classes"][0]["name"] == "deep scratch"
    page.screenshot(path=artifacts_dir / "console-dataset-settings.png")
    assert watched["dialogs"] == [] and watched["errors"] == []


def test_grid_scrolls_through_keyset_pages_with_few_cells(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]]
) -> None:
    dataset = api.dataset()
    api.upload(dataset["id"], 1)
    add_rows(console, dataset["id"], [f"row-{n:05d}.jpg" for n in range(1199)])
    login(page, console, f"datasets/{dataset['id']}")
    expect(page.get_by_test_id("grid-count")).to_have_text("1,200 images")
    grid = page.get_by_test_id("grid")
    cells = page.locator("[data-testid=thumb][data-image-id]")
    expect(cells.first).to_be_visible()
    assert cells.count() < 120  # only the visible rows (and a little overscan) are in the DOM
    grid.evaluate("(el) => { el.scrollTop = el.scrollHeight; }")  # past the first keyset pages
    expect(page.get_by_text("row-01198.jpg")).to_be_visible()
    assert page.locator("[data-testid=thumb]").count() < 120
    last = page.get_by_text("row-01198.jpg").locator("xpath=..")
    last.click()
    wait_js(page, "window.__labeler && window.__labeler.drawnImageId")
    expect(page.get_by_test_id("image-position")).to_have_text("1200 / 1200")
    page.keyboard.press("a")
    expect(page.get_by_test_id("image-position")).to_have_text("1199 / 1200")
    assert watched["errors"] == []


def test_label_with_mouse_and_keys_matches_api_in_image_pixels(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    _, images = label_new_images(page, console, api, 4)  # the first, at one image pixel per CSS pixel
    first = images[0]
    assert page.evaluate("window.__labeler.zoom") == 1

    drag(page, (20, 30), (120, 110))  # box A, class 0 (active)
    drag(page, (150, 40), (260, 200))  # box B: not selected after drawing
    assert page.evaluate("window.__labeler.selected") == -1
    click_image(page, 200, 120)  # select B on purpose
    drag(page, (260, 200), (280, 220))  # resize B by its bottom-right handle
    page.keyboard.press("2")  # B, selected, becomes class 1
    click_image(page, 60, 60)  # select A
    assert page.evaluate("window.__labeler.selected") == 0
    page.keyboard.press("Delete")
    assert len(page.evaluate("window.__labeler.boxes")) == 1
    page.keyboard.press("Control+z")  # A is back
    expect(page.get_by_test_id("box-item")).to_have_count(2)
    wait_saved(page)
    expected = [(0, 20, 30, 120, 110), (1, 150, 40, 280, 220)]
    assert_boxes(api.boxes(first)["boxes"], expected)
    assert api.boxes(first)["status"] == "labeled"

    # Zoomed in (keyboard and wheel), a drawn box still lands on the same image pixels.
    page.keyboard.press("+")
    page.keyboard.press("+")
    centre = page.evaluate("window.__labeler.toClient(160, 120)")
    page.mouse.move(centre["x"], centre["y"])
    page.mouse.wheel(0, -200)
    zoom = page.evaluate("window.__labeler.zoom")
    assert zoom > 1.6, zoom
    page.keyboard.press("Escape")  # deselect, so the hotkey only picks the class for the next box
    page.keyboard.press("1")
    drag(page, (40, 150), (90, 200))
    wait_saved(page)
    assert_boxes(api.boxes(first)["boxes"], [*expected, (0, 40, 150, 90, 200)])
    expect(page.get_by_test_id("class-item").nth(1)).to_contain_text("nut")
    page.screenshot(path=artifacts_dir / "console-labeler.png")

    # Keys: next, previous, next unlabeled; copy boxes from the previous image.
    page.keyboard.press("d")
    wait_js(page, f"window.__labeler.drawnImageId === {images[1]}")
    page.keyboard.press("c")
    wait_js(page, "window.__labeler.boxes.length === 3")
    wait_saved(page)
    assert len(api.boxes(images[1])["boxes"]) == 3
    page.keyboard.press("ArrowLeft")
    wait_js(page, f"window.__labeler.drawnImageId === {first}")
    page.keyboard.press("n")  # images 0 and 1 are labeled now
    wait_js(page, f"window.__labeler.drawnImageId === {images[2]}")
    assert f"/label/{images[2]}" in page.url
    page.keyboard.press("a")
    wait_js(page, f"window.__labeler.drawnImageId === {images[1]}")
    page.keyboard.press("r")
    wait_js(page, "window.__labeler.status === 'reviewed'")
    assert api.boxes(images[1])["status"] == "reviewed"
    page.keyboard.press("?")
    expect(page.get_by_test_id("help-overlay")).to_be_visible()
    page.screenshot(path=artifacts_dir / "console-help.png")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("help-overlay")).to_be_hidden()
    assert watched["dialogs"] == [] and watched["errors"] == []


def test_autosave_survives_reload_and_stats_page(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    _, (image, _) = label_new_images(page, console, api, 2)
    drag(page, (10, 10), (100, 80))
    wait_saved(page)
    page.reload()
    wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {image}")
    assert len(page.evaluate("window.__labeler.boxes")) == 1
    assert page.evaluate("window.__labeler.version") == 1

    page.get_by_test_id("tab-stats").click()
    expect(page.get_by_test_id("stat-boxes")).to_have_text("1")
    expect(page.get_by_test_id("chart-classes")).to_be_visible()
    page.screenshot(path=artifacts_dir / "console-stats.png")
    assert watched["errors"] == []


def test_conflicting_edit_shows_both_versions_and_keeps_the_choice(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    _, (image,) = label_new_images(page, console, api)
    # Someone else saves two boxes while the page shows version 0.
    theirs = [
        {"class_id": 1, "x1": 5, "y1": 5, "x2": 50, "y2": 50},
        {"class_id": 1, "x1": 60, "y1": 60, "x2": 90, "y2": 90},
    ]
    api.call("PUT", f"/images/{image}/annotations", json={"version": 0, "boxes": theirs})
    drag(page, (100, 100), (200, 180))
    dialog = page.get_by_test_id("conflict-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("conflict-mine")).to_contain_text("1 boxes")
    expect(page.get_by_test_id("conflict-theirs")).to_contain_text("2 boxes")
    page.screenshot(path=artifacts_dir / "console-conflict.png")
    page.get_by_test_id("conflict-keep-mine").click()
    expect(dialog).to_be_hidden()
    wait_saved(page)
    stored = api.boxes(image)
    assert stored["version"] == 2
    assert_boxes(stored["boxes"], [(0, 100, 100, 200, 180)])

    # And the other way round: their version wins, nothing of mine is sent.
    api.call("PUT", f"/images/{image}/annotations", json={"version": 2, "boxes": theirs})
    drag(page, (210, 10), (300, 60))
    expect(dialog).to_be_visible()
    page.get_by_test_id("conflict-take-theirs").click()
    wait_js(page, "window.__labeler.boxes.length === 2 && window.__labeler.saveState === 'saved'")
    assert api.boxes(image)["version"] == 3
    assert watched["dialogs"] == []


def test_expired_session_goes_to_login_and_keeps_unsaved_boxes(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]]
) -> None:
    _, (image,) = label_new_images(page, console, api)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "appliance_token")
    httpx.post(f"{console.url}{API}/auth/logout", headers=auth(token)).raise_for_status()  # revoke it
    drag(page, (30, 30), (90, 90))
    expect(page.get_by_test_id("session-expired")).to_be_visible()
    fill_form(page, {"login-username": ADMIN["username"], "login-password": ADMIN["password"]})
    page.get_by_test_id("login-submit").click()
    wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {image}")
    wait_js(page, "window.__labeler.boxes.length === 1 && window.__labeler.saveState === 'saved'")
    assert_boxes(api.boxes(image)["boxes"], [(0, 30, 30, 90, 90)])


def test_user_text_is_rendered_as_text_and_no_script_runs(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    dataset = api.dataset(name=f"<b>bold</b>{XSS}", classes=[XSS, "ok"])
    image = api.call(
        "POST",
        f"/datasets/{dataset['id']}/images",
        files=[("files", (f"{XSS}.jpg", image_bytes(W, H), "image/jpeg"))],
    )["added"][0]["id"]
    login(page, console)
    for route in ("datasets", f"datasets/{dataset['id']}", f"datasets/{dataset['id']}/stats"):
        page.goto(f"{console.url}/#/{route}")
        expect(page.get_by_text(XSS).first).to_be_visible()
    page.goto(f"{console.url}/#/datasets/{dataset['id']}/settings")
    expect(page.get_by_test_id("class-name").first).to_have_value(XSS)
    open_labeler(page, console, dataset["id"], image)
    expect(page.get_by_test_id("class-item").first).to_contain_text(XSS)
    expect(page.get_by_test_id("image-name")).to_have_text(f"{XSS}.jpg")
    page.wait_for_timeout(200)
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("b", has_text="bold").count() == 0
    page.screenshot(path=artifacts_dir / "console-xss-as-text.png")
    assert watched["dialogs"] == [] and watched["errors"] == []


def test_users_page_create_disable_reset(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]], artifacts_dir: Path
) -> None:
    login(page, console, "users")
    fill_form(page, {"new-username": "line-lead", "new-password": "lead-password-1", "new-role": "viewer"})
    page.get_by_test_id("user-create").click()
    row = page.locator("[data-testid=user-row][data-username=line-lead]")
    expect(row).to_be_visible()
    row.get_by_test_id("user-toggle").click()
    page.get_by_test_id("confirm-ok").click()
    expect(row.get_by_test_id("user-state")).to_have_text("disabled")
    row.get_by_test_id("user-reset").click()
    page.get_by_test_id("reset-password").fill("new-lead-password")
    page.get_by_test_id("reset-submit").click()
    expect(page.get_by_test_id("reset-dialog")).to_be_hidden()
    page.screenshot(path=artifacts_dir / "console-users.png")
    users = {u["username"]: u for u in api.call("GET", "/users")}
    assert users["line-lead"]["role"] == "viewer" and users["line-lead"]["disabled"] is True
    row.get_by_test_id("user-toggle").click()
    expect(row.get_by_test_id("user-state")).to_have_text("active")
    login_response = httpx.post(
        f"{console.url}{API}/auth/login", json={"username": "line-lead", "password": "new-lead-password"}
    )
    assert login_response.status_code == 200
    assert watched["dialogs"] == []


def test_unknown_and_malformed_routes_show_not_found(
    page: Page, console: ServerProcess, api: Api, watched: dict[str, list[str]]
) -> None:
    login(page, console)
    for route in ("nowhere", "datasets/%E0%A4%A"):  # the second is a malformed %-escape
        page.goto(f"{console.url}/#/{route}")
        expect(page.get_by_test_id("not-found")).to_be_visible()
    assert watched["errors"] == []


def test_console_is_served_with_a_strict_csp(console: ServerProcess) -> None:
    response = httpx.get(console.url + "/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script type="module" src="/js/app.js">' in response.text
    assert "<script>" not in response.text and "style=" not in response.text
    for asset in ("/js/app.js", "/js/api.js", "/js/pages/label.js", "/css/app.css"):
        served = httpx.get(console.url + asset)
        assert served.status_code == 200, asset
    assert "javascript" in httpx.get(console.url + "/js/app.js").headers["content-type"]
