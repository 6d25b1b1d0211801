"""The labeler never saves a wrong box: the two traps of issue 14 drawn with a real mouse, nested boxes, the cursor,
undo across images, model proposals (dashed, with confidence, not labels until accepted) and image deletion;
every result is read back through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console_support import (
    Api,
    assert_boxes,
    click_image,
    drag,
    label_new_images,
    proposal,
    served,
    wait_saved,
)
from tests.helpers import ServerProcess, wait_js

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Api]]:
    with served(tmp_path_factory.mktemp("labeler")) as server_and_api:
        yield server_and_api


def hover(page: Page, x: float, y: float, shift: bool = False) -> str:
    """The cursor the labeler shows with the mouse at image pixel (x, y)."""
    p = page.evaluate(f"window.__labeler.toClient({x}, {y})")
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(p["x"] + 1, p["y"] + 1)
    page.mouse.move(p["x"], p["y"])
    cursor = str(page.evaluate("window.__labeler.cursor"))
    if shift:
        page.keyboard.up("Shift")
    return cursor


def test_a_class_key_after_drawing_sets_the_next_box_not_the_one_just_drawn(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]]
) -> None:
    _, api = site
    _, (image,) = label_new_images(page, *site, name="trap-class-key")
    drag(page, (40, 40), (110, 100))  # the "circle": a box around a round part, class bolt (active)
    assert page.evaluate("window.__labeler.selected") == -1  # a new box is not selected
    page.keyboard.press("2")  # the class for the next box
    expect(page.get_by_test_id("next-class")).to_have_text("next box: nut")
    drag(page, (150, 50), (230, 130))  # the "square", class nut
    wait_saved(page)
    stored = api.boxes(image)
    assert_boxes(stored["boxes"], [(0, 40, 40, 110, 100), (1, 150, 50, 230, 130)])
    assert stored["status"] == "labeled"
    # Changing a box's class needs that box selected on purpose: click it, then the key.
    click_image(page, 70, 70)
    page.keyboard.press("2")
    wait_saved(page)
    assert_boxes(api.boxes(image)["boxes"], [(1, 40, 40, 110, 100), (1, 150, 50, 230, 130)])
    assert watched["errors"] == []


def test_a_drag_inside_a_box_draws_a_nested_box_and_only_a_selected_box_moves(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]]
) -> None:
    _, api = site
    _, (image,) = label_new_images(page, *site, name="trap-nested")
    big = (0, 20, 30, 260, 200)
    drag(page, big[1:3], big[3:5])
    # A drag starting inside the larger (unselected) box draws a new box there; the larger one stays put.
    drag(page, (60, 80), (120, 140))
    wait_saved(page)
    stored = api.boxes(image)["boxes"]
    assert_boxes(stored, [big, (0, 60, 80, 120, 140)])
    # A click selects the smallest box under it; a drag on that (selected) box moves it.
    click_image(page, 90, 110)
    assert page.evaluate("window.__labeler.selected") == 1
    drag(page, (90, 110), (100, 120))
    wait_saved(page)
    assert_boxes(api.boxes(image)["boxes"], [big, (0, 70, 90, 130, 150)])
    # Selected, the large box moves when dragged; with Shift held a drag on it draws instead.
    click_image(page, 200, 60)
    assert page.evaluate("window.__labeler.selected") == 0
    page.keyboard.down("Shift")
    drag(page, (180, 50), (240, 90))
    page.keyboard.up("Shift")
    wait_saved(page)
    assert_boxes(api.boxes(image)["boxes"], [big, (0, 70, 90, 130, 150), (0, 180, 50, 240, 90)])
    # A drag on a box's tag (its class name above it) moves that box, selected or not.
    page.keyboard.press("Escape")
    drag(page, (25, 22), (35, 32))
    wait_saved(page)
    assert_boxes(
        api.boxes(image)["boxes"], [(0, 30, 40, 270, 210), (0, 70, 90, 130, 150), (0, 180, 50, 240, 90)]
    )
    assert watched["errors"] == []


def test_the_cursor_says_what_a_drag_will_do(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]]
) -> None:
    label_new_images(page, *site, name="cursor")
    drag(page, (20, 30), (200, 180))
    assert hover(page, 250, 220) == "crosshair"  # empty image: draw
    assert hover(page, 100, 100) == "cell"  # an unselected box: click selects, drag draws inside it
    click_image(page, 100, 100)
    assert hover(page, 100, 100) == "move"  # the selected box: drag moves it
    assert hover(page, 100, 100, shift=True) == "crosshair"  # Shift: draw anyway
    assert hover(page, 200, 180) == "se-resize"  # its corner handle
    assert hover(page, 25, 22) == "move"  # a tag
    assert watched["errors"] == []


def test_undo_history_survives_moving_between_images(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]]
) -> None:
    _, api = site
    _, images = label_new_images(page, *site, 2, name="undo-across")
    drag(page, (10, 10), (60, 60))
    drag(page, (100, 100), (150, 150))
    wait_saved(page)
    page.keyboard.press("d")
    wait_js(page, f"window.__labeler.drawnImageId === {images[1]}")
    assert page.evaluate("window.__labeler.undoDepth") == 0
    drag(page, (20, 20), (80, 80))
    wait_saved(page)
    page.keyboard.press("a")
    wait_js(page, f"window.__labeler.drawnImageId === {images[0]}")
    assert page.evaluate("window.__labeler.undoDepth") == 2
    page.keyboard.press("Control+z")  # the second box drawn on the first image goes
    wait_js(page, "window.__labeler.boxes.length === 1")
    wait_saved(page)
    assert_boxes(api.boxes(images[0])["boxes"], [(0, 10, 10, 60, 60)])
    assert_boxes(api.boxes(images[1])["boxes"], [(0, 20, 20, 80, 80)])
    assert watched["errors"] == []


# Fraction of the pixels along a box's bottom edge (image px, zoom 1) that have the class colour: about 1 for a
# solid line, clearly less for a dashed one.
EDGE_COVERAGE = """([x1, x2, y, color]) => {
  const c = document.querySelector('[data-testid=label-canvas]');
  const p = window.__labeler.toClient(0, 0); const r = c.getBoundingClientRect();
  const dpr = c.width / r.width; const ox = (p.x - r.left) * dpr; const oy = (p.y - r.top) * dpr;
  const d = c.getContext('2d').getImageData(ox + x1 * dpr, oy + y * dpr, (x2 - x1) * dpr, 1).data;
  let hit = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - color[0]) < 40 && Math.abs(d[i + 1] - color[1]) < 40 && Math.abs(d[i + 2] - color[2]) < 40) hit++;
  }
  return hit / (d.length / 4);
}"""


def test_model_proposals_are_dashed_with_confidence_and_not_labels_until_accepted(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]], artifacts_dir: Any
) -> None:
    _, api = site
    # Two pre-labels the way a camera capture stores them: source "model", a confidence, the image unlabeled.
    proposals = [proposal(0, 20, 40, 120, 140, 0.91), proposal(1, 160, 40, 260, 140, 0.42)]
    _, (image,) = label_new_images(page, *site, name="prelabels", proposals=proposals)
    assert page.evaluate("window.__labeler.pending") == 2
    items = page.get_by_test_id("suggestion-item")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("0.91")  # most confident first
    expect(page.get_by_test_id("box-item")).to_have_count(0)  # a person's boxes: none yet
    page.get_by_test_id("label-canvas").focus()
    page.wait_for_timeout(100)  # one frame drawn at zoom 1
    color = [255, 107, 107]  # the first class's colour (#ff6b6b)
    dashed = page.evaluate(EDGE_COVERAGE, [25, 115, 140, color])
    assert 0.3 < dashed < 0.85, dashed
    page.screenshot(path=artifacts_dir / "labeler-proposals.png")

    page.keyboard.press("Enter")  # accepts the highlighted (most confident) proposal
    expect(items).to_have_count(1)
    expect(page.get_by_test_id("box-item")).to_have_count(1)
    wait_saved(page)
    stored = api.boxes(image)
    # One proposal is still unreviewed: the image stays unlabeled (training does not take it).
    assert stored["status"] == "unlabeled"
    assert sorted((b["source"], b["confidence"]) for b in stored["boxes"]) == [
        ("manual", None),
        ("model", 0.42),
    ]
    solid = page.evaluate(EDGE_COVERAGE, [25, 115, 140, color])
    assert solid > 0.95, solid
    # Marking it reviewed is refused while a proposal waits.
    page.keyboard.press("r")
    expect(page.get_by_test_id("toast").last).to_contain_text("Accept or reject")
    assert api.boxes(image)["status"] == "unlabeled"

    page.keyboard.press("x")  # rejects the other: every box is a person's now
    expect(items).to_have_count(0)
    wait_saved(page)
    stored = api.boxes(image)
    assert stored["status"] == "labeled"
    assert_boxes(stored["boxes"], [(0, 20, 40, 120, 140)])
    assert stored["boxes"][0]["source"] == "manual"
    assert watched["errors"] == []


def test_accept_all_and_a_class_change_accept_proposals(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]]
) -> None:
    _, api = site
    proposals = [proposal(0, 10, 10, 60, 60, 0.8), proposal(0, 100, 100, 160, 160, 0.7)]
    _, (image,) = label_new_images(page, *site, name="accept-all", proposals=proposals)
    click_image(page, 130, 130)  # select a proposal and give it another class: reviewed by a person
    page.keyboard.press("2")
    wait_saved(page)
    stored = api.boxes(image)
    assert stored["status"] == "unlabeled"
    assert sorted((b["class_id"], b["source"]) for b in stored["boxes"]) == [(0, "model"), (1, "manual")]
    page.get_by_test_id("accept-all").click()
    wait_saved(page)
    stored = api.boxes(image)
    assert stored["status"] == "labeled" and {b["source"] for b in stored["boxes"]} == {"manual"}
    assert watched["errors"] == []


def test_delete_an_image_from_the_labeler_and_from_the_grid(
    page: Page, site: tuple[ServerProcess, Api], watched: dict[str, list[str]], artifacts_dir: Any
) -> None:
    server, api = site
    dataset_id, images = label_new_images(page, *site, 3, name="delete-images")
    page.get_by_test_id("delete-image").click()
    page.get_by_test_id("confirm-ok").click()
    wait_js(page, f"window.__labeler && window.__labeler.drawnImageId === {images[1]}")
    assert api.http.get(f"/images/{images[0]}", headers=api.headers).status_code == 404
    expect(page.get_by_test_id("image-position")).to_have_text("1 / 2")

    page.goto(f"{server.url}/#/datasets/{dataset_id}")
    cell = page.locator(f"[data-testid=thumb][data-image-id='{images[2]}']")
    expect(cell).to_be_visible()
    cell.hover()
    cell.get_by_test_id("thumb-delete").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.locator("[data-testid=thumb][data-image-id]")).to_have_count(1)
    expect(page.get_by_test_id("count-all")).to_have_text("1")
    assert api.http.get(f"/images/{images[2]}", headers=api.headers).status_code == 404
    assert watched["errors"] == []
