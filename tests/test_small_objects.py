"""An image size that makes the objects vanish (issue 23, item 7): the plan warns when the median labeled object
would be under 8 px at the chosen size, and a run whose box loss stayed 0.000 says why in its result's advice.

Why 0.000: ultralytics' TaskAlignedAssigner does assign anchors to boxes of a few pixels (small boxes are
enlarged to a stride when anchors are picked), but weighs each by score^0.5 x IoU^6 with the current
predictions; the untrained head's boxes are ~120 px wide, a 5 px box overlaps them by IoU ~0.003, the weight
falls to ~1e-10 and the box and DFL losses, which it scales, to ~1e-9. The slow test trains for real at 32 px
(from the Train page, as the user did) and reads the losses the run recorded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from litestar.testing import TestClient
from playwright.sync_api import Page, expect

from appliance.training.plan import run_advice, small_objects_warning
from appliance.training.schemas import EpochMetrics
from tests.console_support import Api, login, served
from tests.helpers import API, create_dataset, upload
from tests.training_support import RUN_TIMEOUT
from tests.workers import WorkerProcess

W, H = 320, 240


def parts(seed: int) -> tuple[bytes, list[dict[str, Any]]]:
    """A 320x240 image with two shapes of 30-70 px (the user's parts), and their boxes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    boxes = []
    for _ in range(2):
        side = int(rng.integers(30, 70))
        x, y, class_id = (
            int(rng.integers(0, W - side)),
            int(rng.integers(0, H - side)),
            int(rng.integers(0, 2)),
        )
        if class_id == 0:
            cv2.circle(image, (x + side // 2, y + side // 2), side // 2, (230, 120, 30), -1)
        else:
            cv2.rectangle(image, (x, y), (x + side, y + side), (40, 40, 230), -1)
        boxes.append({"class_id": class_id, "x1": x, "y1": y, "x2": x + side, "y2": y + side})
    return cv2.imencode(".jpg", image)[1].tobytes(), boxes


def labeled_parts(put: Any, post_files: Any, count: int) -> None:
    made = [parts(seed) for seed in range(count)]
    added = post_files([(f"part-{i:02d}.jpg", data) for i, (data, _) in enumerate(made)])
    for image in added:
        boxes = made[int(image["original_name"][5:7])][1]
        put(image["id"], boxes)


def test_the_plan_warns_when_the_median_object_is_under_8_px_at_the_chosen_size(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    dataset = create_dataset(client, admin, name="parts", classes=["circle", "square"])

    def put(image_id: int, boxes: list[dict[str, Any]]) -> None:
        body = {"version": 0, "boxes": boxes}
        assert client.put(f"{API}/images/{image_id}/annotations", json=body, headers=admin).status_code == 200

    labeled_parts(put, lambda files: upload(client, admin, dataset["id"], files)["added"], 6)

    def plan(size: int | None) -> dict[str, Any]:
        params = {"dataset_id": dataset["id"], **({"imgsz": size} if size else {})}
        response = client.get(f"{API}/training-jobs/plan", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return response.json()

    small = [w for w in plan(32)["warnings"] if "median labeled object" in w]
    assert len(small) == 1 and re.search(
        r"At 32 px the median labeled object is about [3-9]\.\d px", small[0]
    )
    assert (
        "Use 128 px or more" in small[0]
        or "Use 96 px or more" in small[0]
        or "Use 160 px or more" in small[0]
    )
    assert not [w for w in plan(320)["warnings"] if "median labeled object" in w]
    # Without a size asked for, the recommended one is checked (320 here: nothing to say).
    assert not [w for w in plan(None)["warnings"] if "median labeled object" in w]


def test_advice_only_when_the_box_loss_stayed_zero() -> None:
    zero = [EpochMetrics(epoch=1, box_loss=0.0), EpochMetrics(epoch=2, box_loss=2e-5)]
    advice = run_advice(zero, 32, 50 / 320)
    assert len(advice) == 1 and "The box loss was 0.000 in every epoch" in advice[0]
    assert "about 5.0 px" in advice[0] and "Train at 128 px or more" in advice[0]
    assert (
        run_advice([EpochMetrics(epoch=1, box_loss=0.0), EpochMetrics(epoch=2, box_loss=0.8)], 32, 0.15) == []
    )
    assert run_advice([], 32, 0.15) == [] and run_advice([EpochMetrics(epoch=1)], 32, 0.15) == []
    assert "too small to carry any weight" in run_advice(zero, 32, None)[0]
    assert small_objects_warning(640, 50 / 320) is None and small_objects_warning(32, None) is None


# --- slow: the real run at 32 px, started from the Train page -------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Any, Api, WorkerProcess]]:
    with served(tmp_path) as (server, api):
        worker = WorkerProcess(server.data_dir).start()
        try:
            yield server, api, worker
        finally:
            worker.stop()


@pytest.mark.slow
@pytest.mark.browser
def test_a_run_at_32_px_says_why_its_box_loss_stayed_zero(
    page: Page, box: tuple[Any, Api, WorkerProcess], watched: dict[str, list[str]]
) -> None:
    server, api, worker = box
    dataset = api.dataset(name="parts", classes=["circle", "square"])

    def put(image_id: int, boxes: list[dict[str, Any]]) -> None:
        api.call("PUT", f"/images/{image_id}/annotations", json={"version": 0, "boxes": boxes})

    def post_files(files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        body = [("files", (name, data, "image/jpeg")) for name, data in files]
        return api.call("POST", f"/datasets/{dataset['id']}/images", files=body)["added"]

    labeled_parts(put, post_files, 10)  # 8 train images: batches of 4 (a batch of 1 at 32 px is refused)
    login(page, server, f"training?dataset={dataset['id']}")
    page.get_by_test_id("train-base").select_option("yolov8n.yaml")
    page.get_by_test_id("train-epochs").fill("2")
    page.get_by_test_id("train-imgsz").fill("32")
    page.get_by_test_id("train-batch").fill("4")
    page.get_by_test_id("train-plots").uncheck()
    expect(page.get_by_test_id("plan-warnings")).to_contain_text(
        "At 32 px the median labeled object is about"
    )
    page.get_by_test_id("train-start").click()
    status = page.get_by_test_id("job-status")
    expect(status).to_have_text(re.compile("completed|failed|cancelled"), timeout=RUN_TIMEOUT * 1000)
    job_id = int(page.url.rsplit("/", 1)[1])
    job = api.call("GET", f"/training-jobs/{job_id}")
    assert job["status"] == "completed", (job["error"], job["log_tail"], worker.log_text()[-3000:])
    assert [m["box_loss"] for m in job["metrics"]] == [0.0, 0.0], (job["metrics"], worker.log_text()[-2000:])
    assert len(job["result"]["advice"]) == 1
    advice = page.get_by_test_id("job-advice")
    expect(advice).to_contain_text("The box loss was 0.000 in every epoch: the model learned no boxes")
    expect(advice).to_contain_text("at 32 px the median labeled object is about")
    expect(advice).to_contain_text("px or more")
    assert [e for e in watched["errors"] if "favicon" not in e] == []
