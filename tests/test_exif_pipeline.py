"""A phone photo (EXIF Orientation 6 or 8) keeps one pixel space, the oriented one, from the upload through the
labeler, the training snapshot's labels, ultralytics' own reading, the COCO and YOLO exports, to inference on
the upload: a red square drawn on the stored (raw) pixels is found, boxed and exported where the eye sees it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from appliance.imaging.exif import orient_box
from tests.helpers import API, ServerProcess, create_dataset, upload, wait_js
from tests.models import COLORS

RAW_W, RAW_H = 240, 120
SQUARE = (24, 16, 72, 64)  # raw pixels: x1, y1, x2, y2


def phone_photo(orientation: int, seed: int = 0) -> bytes:
    raw = np.random.default_rng(seed).integers(60, 110, (RAW_H, RAW_W, 3), dtype=np.uint8)
    cv2.rectangle(raw, SQUARE[:2], (SQUARE[2] - 1, SQUARE[3] - 1), COLORS[0], -1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)).save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def oriented_square(orientation: int) -> tuple[float, float, float, float]:
    return orient_box(SQUARE, orientation, RAW_W, RAW_H)


def test_one_pixel_space_from_upload_to_snapshot_exports_and_inference(
    client: Any, admin: dict[str, str], config: Any, fresh_db: Any, tmp_path: Path
) -> None:
    from appliance.training.snapshot import build_snapshot
    from tests.camera_sources import build_colour_onnx, deploy_model

    dataset = create_dataset(client, admin, classes=["square"])
    photos = {6: phone_photo(6, seed=1), 8: phone_photo(8, seed=2)}
    added = upload(client, admin, dataset["id"], [(f"phone-{o}.jpg", data) for o, data in photos.items()])[
        "added"
    ]
    for image, orientation in zip(added, photos, strict=True):
        assert (image["width"], image["height"]) == (RAW_H, RAW_W)  # turned a quarter: the oriented size
        x1, y1, x2, y2 = oriented_square(orientation)
        body = {"version": 0, "boxes": [{"class_id": 0, "x1": x1, "y1": y1, "x2": x2, "y2": y2}]}
        put = client.put(f"{API}/images/{image['id']}/annotations", json=body, headers=admin)
        assert put.status_code == 200, put.text

    # The training snapshot: labels normalised by the oriented size, and ultralytics sizes the file the same.
    from ultralytics.data.utils import exif_size

    from appliance.jobs.service import create_job

    job_id = create_job(fresh_db, "train", {}, user_id=None, dataset_id=dataset["id"])
    run = tmp_path / "run"
    summary = build_snapshot(fresh_db, config.data_path, run, job_id, dataset["id"], val_ratio=0.5, seed=0)
    assert summary.images == 2
    for image, orientation in zip(added, photos, strict=True):
        label = next((tmp_path / "run" / "labels").rglob(f"{image['id']}.txt"))
        _, cx, cy, w, h = (float(v) for v in label.read_text().split())
        x1, y1, x2, y2 = oriented_square(orientation)
        assert cx * RAW_H == pytest.approx((x1 + x2) / 2, abs=1e-3) and cy * RAW_W == pytest.approx(
            (y1 + y2) / 2, abs=1e-3
        )
        assert w * RAW_H == pytest.approx(x2 - x1, abs=1e-3) and h * RAW_W == pytest.approx(y2 - y1, abs=1e-3)
        linked = next((tmp_path / "run" / "images").rglob(f"{image['id']}.*"))
        assert exif_size(Image.open(linked)) == (RAW_H, RAW_W)

    # Exports: COCO sizes and boxes, YOLO normalised boxes, all in the oriented space.
    coco = zipfile.ZipFile(
        io.BytesIO(client.get(f"{API}/datasets/{dataset['id']}/export?format=coco", headers=admin).content)
    )
    document = json.loads(coco.read("annotations.json"))
    for entry in document["images"]:
        assert (entry["width"], entry["height"]) == (RAW_H, RAW_W)
    by_image = {a["image_id"]: a["bbox"] for a in document["annotations"]}
    for entry, orientation in zip(
        sorted(document["images"], key=lambda e: e["file_name"]), (6, 8), strict=True
    ):
        x1, y1, x2, y2 = oriented_square(orientation)
        assert by_image[entry["id"]] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3)
    yolo = zipfile.ZipFile(
        io.BytesIO(client.get(f"{API}/datasets/{dataset['id']}/export?format=yolo", headers=admin).content)
    )
    labels = [n for n in yolo.namelist() if n.startswith("labels/") and n.endswith(".txt")]
    assert len(labels) == 2

    # Inference on the uploaded photo: the colour model finds the red square where the eye sees it.
    model_id = deploy_model(config, fresh_db, build_colour_onnx(tmp_path / "colour" / "model_64.onnx"), None)
    for orientation, data in photos.items():
        response = client.post(
            f"{API}/inference",
            files={"image": ("phone.jpg", data, "image/jpeg")},
            data={"model_id": str(model_id), "confidence": "0.5"},
            headers=admin,
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["width"], result["height"]) == (RAW_H, RAW_W)
        x1, y1, x2, y2 = oriented_square(orientation)
        centres = [
            ((d["box"]["x1"] + d["box"]["x2"]) / 2, (d["box"]["y1"] + d["box"]["y2"]) / 2)
            for d in result["detections"]
        ]
        assert centres and all(x1 - 4 <= cx <= x2 + 4 and y1 - 4 <= cy <= y2 + 4 for cx, cy in centres), (
            orientation,
            centres,
        )


@pytest.mark.browser
def test_the_labeler_draws_the_photo_as_it_is_seen_and_saves_boxes_in_that_space(
    page: Page, server: ServerProcess, watched: dict[str, list[str]]
) -> None:
    import httpx

    from tests.console_support import drag, label_at_actual_size, wait_saved
    from tests.helpers import auth

    http = httpx.Client(base_url=server.url, timeout=30)
    headers = auth(http.post(f"{API}/auth/setup", json=server.setup_body()).json()["access_token"])
    dataset = create_dataset(http, headers, classes=["square"])
    (image,) = upload(http, headers, dataset["id"], [("phone.jpg", phone_photo(6))])["added"]
    label_at_actual_size(page, server, dataset["id"], image["id"])  # one image pixel per CSS pixel
    x1, y1, x2, y2 = oriented_square(6)
    # The canvas shows the square where the oriented coordinates say: sample the drawn pixel there (the
    # zoom change above is drawn on the next frame, so wait for it rather than sample once).
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    red_at_centre = f"""(() => {{
      const p = window.__labeler.toClient({cx}, {cy});
      const canvas = document.querySelector('[data-testid="label-canvas"]');
      const rect = canvas.getBoundingClientRect();
      const scale = canvas.width / rect.width;
      const [r, g, b] = canvas.getContext('2d')
        .getImageData((p.x - rect.left) * scale, (p.y - rect.top) * scale, 1, 1).data;
      return r > 180 && g < 90 && b < 90;
    }})()"""
    wait_js(page, red_at_centre, timeout=10)
    raw_centre = (
        (SQUARE[0] + SQUARE[2]) / 2,
        (SQUARE[1] + SQUARE[3]) / 2,
    )  # where an unoriented drawing has it
    assert not page.evaluate(red_at_centre.replace(f"toClient({cx}, {cy})", f"toClient{raw_centre}"))
    drag(page, (x1, y1), (x2, y2))
    wait_saved(page)
    stored = http.get(f"{API}/images/{image['id']}/annotations", headers=headers).json()
    (box,) = stored["boxes"]
    assert [box["x1"], box["y1"], box["x2"], box["y2"]] == pytest.approx([x1, y1, x2, y2], abs=1.0)
    assert (stored["width"], stored["height"]) == (RAW_H, RAW_W)
    assert watched["errors"] == []
