"""Model evaluation through the API and the worker's "evaluate" job (its child process included), on a dataset
whose right answers are known: the hand-built colour detector (a real ONNX model run by the real pipeline)
on scenes of red squares and blue discs, labelled with deliberate mistakes. Frozen splits, the errors of each
image, the confusion matrix's bookkeeping, comparing two models, who may see what."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from litestar.testing import TestClient

from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, open_database, write_transaction
from appliance.jobs.service import claim_next_job
from appliance.jobs.worker import load_job_kinds, run_one
from tests.camera_sources import CELL, build_colour_onnx, renamed_model, scene
from tests.helpers import API, create_dataset, create_user, upload

SQUARE, DISC = 0, 1


def cell(col: int, row: int) -> list[float]:
    return [col * CELL, row * CELL, col * CELL + CELL, row * CELL + CELL]


# name: (squares, discs, labels (class, cell)). A: right; B: the disc labelled a square (the model says disc:
# a wrong class); C: an unlabelled square (a false positive) and a label on nothing (a miss); D: empty.
SCENES = {
    "a": ([(1, 1), (1, 3)], [], [(SQUARE, (1, 1)), (SQUARE, (1, 3))]),
    "b": ([(2, 2)], [(5, 5)], [(SQUARE, (2, 2)), (SQUARE, (5, 5))]),
    "c": ([(4, 4)], [], [(SQUARE, (6, 1))]),
    "d": ([], [], []),
}


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


def add_model(
    config: Config, db: Database, onnx: Path, name: str, classes: list[str] | None = None
) -> tuple[int, int]:
    """A model with a completed ONNX export (no weights): (model id, export id); public, owned by the admin."""
    model_id = renamed_model(config, db, onnx, name, classes or ["square", "disc"])
    with write_transaction(db):
        db.execute("UPDATE models SET owner_id = 1, is_public = 1 WHERE id = ?", [model_id])
        export_id = db.execute(
            """INSERT INTO model_exports (model_id, format, precision, imgsz, status, path, created_at)
               VALUES (?, 'onnx', 'fp32', 64, 'completed', 'model_64.onnx', ?)""",
            [model_id, now_iso()],
        ).lastrowid
    assert export_id is not None
    return model_id, int(export_id)


def run_jobs(config: Config) -> list[str]:
    """Run every pending "evaluate" job to its end here, as the worker's gpu lane does."""
    load_job_kinds()
    db = open_database(config.db_path)
    states = []
    try:
        while (job := claim_next_job(db, ["evaluate"])) is not None:
            states.append(run_one(job, db, config))
    finally:
        db.conn.close()
    return states


@pytest.fixture
def site(
    client: TestClient[Any], admin: dict[str, str], config: Config, colour_onnx: Path
) -> Iterator[dict[str, Any]]:
    dataset = create_dataset(client, admin, "line", ["square", "disc"], is_public=True)
    files = []
    for name, (squares, discs, _) in SCENES.items():
        ok, data = cv2.imencode(".png", scene(squares, discs, seed=ord(name)))
        assert ok
        files.append((f"{name}.png", data.tobytes()))
    added = {Path(i["original_name"]).stem: i for i in upload(client, admin, dataset["id"], files)["added"]}
    for name, (_, _, labels) in SCENES.items():
        image = added[name]
        boxes = [
            dict(zip(("x1", "y1", "x2", "y2"), cell(*where), strict=True), class_id=c) for c, where in labels
        ]
        body = {"version": image["version"], "boxes": boxes, "status": "labeled"}
        response = client.put(f"{API}/images/{image['id']}/annotations", json=body, headers=admin)
        assert response.status_code == 200, response.text
    db = open_database(config.db_path)
    model_id, export_id = add_model(config, db, colour_onnx, "colour")
    swapped_id, swapped_export = add_model(config, db, colour_onnx, "swapped", ["disc", "square"])
    yield {
        "dataset": dataset,
        "images": added,
        "model": model_id,
        "export": export_id,
        "swapped": swapped_id,
        "swapped_export": swapped_export,
        "db": db,
    }
    db.conn.close()


def evaluate(client: TestClient[Any], headers: dict[str, str], model_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/models/{model_id}/evaluations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def finished(client: TestClient[Any], headers: dict[str, str], evaluation_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/evaluations/{evaluation_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def images(
    client: TestClient[Any], headers: dict[str, str], evaluation_id: int, which: str
) -> list[dict[str, Any]]:
    response = client.get(
        f"{API}/evaluations/{evaluation_id}/images?which={which}&limit=200", headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_errors_per_image_and_the_matrix_add_up_on_known_answers(
    client: TestClient[Any], admin: dict[str, str], config: Config, site: dict[str, Any]
) -> None:
    queued = evaluate(
        client, admin, site["model"], dataset_id=site["dataset"]["id"], export_id=site["export"]
    )
    assert queued["status"] == "pending" and queued["source"] == "model_64.onnx"
    assert (
        queued["split"]["kind"] == "dataset"
        and queued["split"]["images"] == 4
        and queued["split"]["boxes"] == 5
    )
    assert run_jobs(config) == ["completed"]
    done = finished(client, admin, queued["id"])
    assert done["status"] == "completed", done["error"]
    summary = done["summary"]
    assert summary["images"] == summary["images_evaluated"] == 4 and summary["images_missing"] == 0
    assert summary["matrix_classes"] == ["square", "disc", "background"]
    # [predicted][true]: 3 squares found; the disc labelled "square" is a confusion; one square on nothing
    # (false positive, background column); one label on nothing (a miss, background row).
    assert summary["confusion_matrix"] == [[3, 0, 1], [1, 0, 0], [1, 0, 0]]
    matrix = summary["confusion_matrix"]
    assert [sum(row[c] for row in matrix) for c in (SQUARE, DISC)] == [5, 0]  # = labels per class
    assert [sum(matrix[c]) for c in (SQUARE, DISC)] == [4, 1]  # = confident predictions per class
    assert summary["labels"] == 5 and summary["predictions"] == 5
    assert [c["name"] for c in summary["classes"]] == ["square"]  # the means are over classes with labels
    square = summary["classes"][0]
    assert square["labels"] == 5 and square["images"] == 3
    assert 0.45 <= square["map50"] <= 0.6 and square["map50"] == square["map50_95"]  # exact boxes: every IoU
    assert len(square["pr_curve"]) == 101 and len(square["f1_curve"]) == 101
    assert (
        summary["images_with_false_positives"],
        summary["images_with_misses"],
        summary["images_with_wrong_class"],
    ) == (1, 1, 1)

    by_name = {v["id"]: k for k, v in site["images"].items()}
    wrong = images(client, admin, done["id"], "errors")
    assert sorted(by_name[i["image_id"]] for i in wrong) == ["b", "c"]
    c = next(i for i in wrong if by_name[i["image_id"]] == "c")
    assert c["dataset_id"] == site["dataset"]["id"] and (c["width"], c["height"]) == (256, 256)
    assert (c["false_positives"], c["misses"], c["wrong_class"]) == (1, 1, 0)
    fp = c["predictions"][c["errors"]["false_positives"][0]]
    assert [fp["x1"], fp["y1"], fp["x2"], fp["y2"]] == cell(4, 4) and fp["class_name"] == "square"
    miss = c["labels"][c["errors"]["missed"][0]]
    assert [miss["x1"], miss["y1"], miss["x2"], miss["y2"]] == cell(6, 1)
    b = next(i for i in wrong if by_name[i["image_id"]] == "b")
    prediction, label = b["errors"]["wrong_class"][0]
    assert (
        b["predictions"][prediction]["class_name"] == "disc" and b["labels"][label]["class_name"] == "square"
    )
    assert [by_name[i["image_id"]] for i in images(client, admin, done["id"], "misses")] == ["c"]
    assert len(images(client, admin, done["id"], "all")) == 4
    latest = client.get(f"{API}/evaluations/latest", headers=admin).json()
    assert {e["model_id"]: e["id"] for e in latest}[site["model"]] == done["id"]


def test_a_split_stays_frozen_while_the_dataset_changes(
    client: TestClient[Any], admin: dict[str, str], config: Config, site: dict[str, Any]
) -> None:
    first = evaluate(client, admin, site["model"], dataset_id=site["dataset"]["id"], export_id=site["export"])
    again = evaluate(
        client, admin, site["swapped"], dataset_id=site["dataset"]["id"], export_id=site["swapped_export"]
    )
    assert again["split"]["id"] == first["split"]["id"]  # nothing changed: the same frozen images
    # Fix C's labels after the split was frozen: the split keeps the old ones; a new freeze takes the new.
    image_c = site["images"]["c"]
    current = client.get(f"{API}/images/{image_c['id']}/annotations", headers=admin).json()
    fixed = {
        "version": current["version"],
        "boxes": [dict(zip(("x1", "y1", "x2", "y2"), cell(4, 4), strict=True), class_id=SQUARE)],
    }
    assert (
        client.put(f"{API}/images/{image_c['id']}/annotations", json=fixed, headers=admin).status_code == 200
    )
    run_jobs(config)
    old = images(client, admin, first["id"], "misses")
    assert len(old) == 1 and old[0]["labels_changed"] and old[0]["image_id"] == image_c["id"]
    later = evaluate(client, admin, site["model"], dataset_id=site["dataset"]["id"], export_id=site["export"])
    assert later["split"]["id"] != first["split"]["id"] and later["split"]["boxes"] == 5
    # The same frozen split again, by id: an image deleted from its dataset since is missing, and counted.
    response = client.delete(f"{API}/images/{site['images']['d']['id']}", headers=admin)
    assert response.status_code == 204, response.text
    rerun = evaluate(client, admin, site["model"], split_id=first["split"]["id"], export_id=site["export"])
    run_jobs(config)
    summary = finished(client, admin, rerun["id"])["summary"]
    assert summary["images"] == 4 and summary["images_missing"] == 1 and summary["images_evaluated"] == 3
    (gone,) = images(client, admin, rerun["id"], "missing")
    assert gone["missing"] == "its file is gone" and gone["image_id"] is None
    assert finished(client, admin, later["id"])["summary"]["images_with_misses"] == 0
    # A file grown past max_image_mb since (a damaged disk, a swapped file): read no further than the limit.
    sha = client.get(f"{API}/images/{site['images']['a']['id']}", headers=admin).json()["sha256"]
    (stored,) = (config.data_path / "images" / sha[:2]).glob(f"{sha}.*")
    with stored.open("ab") as grown:
        grown.write(bytes(3 << 20))
    config.max_image_mb = 1
    big = evaluate(client, admin, site["model"], split_id=first["split"]["id"], export_id=site["export"])
    run_jobs(config)
    assert finished(client, admin, big["id"])["summary"]["images_missing"] == 2
    reasons = {i["missing"] for i in images(client, admin, big["id"], "missing")}
    assert reasons == {"its file is gone", "unreadable: image is 1048577 bytes; the limit is 1048576"}


def test_comparing_two_models_on_the_same_images(
    client: TestClient[Any], admin: dict[str, str], config: Config, site: dict[str, Any]
) -> None:
    a = evaluate(client, admin, site["model"], dataset_id=site["dataset"]["id"], export_id=site["export"])
    b = evaluate(client, admin, site["swapped"], split_id=a["split"]["id"], export_id=site["swapped_export"])
    early = client.get(f"{API}/evaluations/compare?a={a['id']}&b={b['id']}", headers=admin)
    assert early.status_code == 409  # not finished yet
    run_jobs(config)
    response = client.get(f"{API}/evaluations/compare?a={a['id']}&b={b['id']}", headers=admin)
    assert response.status_code == 200, response.text
    found = response.json()
    # "swapped" calls squares discs and discs squares: it disagrees on every image with a shape.
    assert found["images"] == 4 and found["disagreements"] == 3
    assert found["a"]["summary"]["map50"] > found["b"]["summary"]["map50"]
    by_name = {v["id"]: k for k, v in site["images"].items()}
    shown = {by_name[d["image_id"]]: d for d in found["shown"]}
    assert set(shown) == {"a", "b", "c"}
    assert shown["a"]["better"] == "a" and shown["a"]["a_errors"] == 0 and shown["a"]["b_errors"] == 2
    assert {p["class_name"] for p in shown["a"]["b"]} == {"disc"}
    other = client.post(
        f"{API}/models/{site['model']}/evaluations", json={"split_id": a["split"]["id"]}, headers=admin
    )
    assert other.status_code == 409  # no weights: only an export can be evaluated
    unlike = evaluate(
        client, admin, site["model"], dataset_id=site["dataset"]["id"], export_id=site["export"]
    )
    assert unlike["split"]["id"] == a["split"]["id"]


def test_requests_are_checked_and_evaluations_follow_what_the_caller_may_see(
    client: TestClient[Any], admin: dict[str, str], config: Config, site: dict[str, Any]
) -> None:
    model = site["model"]
    for body in ({}, {"dataset_id": 1, "split_id": 1}, {"dataset_id": site["dataset"]["id"], "extra": 1}):
        response = client.post(f"{API}/models/{model}/evaluations", json=body, headers=admin)
        assert response.status_code in (400, 422), (body, response.text)
    assert (
        client.post(
            f"{API}/models/{model}/evaluations",
            json={"dataset_id": 999, "export_id": site["export"]},
            headers=admin,
        ).status_code
        == 404
    )
    no_export = client.post(
        f"{API}/models/{model}/evaluations",
        json={"dataset_id": site["dataset"]["id"], "export_id": 999},
        headers=admin,
    )
    assert no_export.status_code == 404
    private = create_dataset(client, admin, "private", ["square"])
    done = evaluate(client, admin, model, dataset_id=site["dataset"]["id"], export_id=site["export"])
    viewer = create_user(client, admin, "viewer1", "viewer")
    labeler = create_user(client, admin, "labeler1", "labeler")
    # A viewer reads evaluations of public models on public datasets, but asks for none.
    assert client.get(f"{API}/evaluations/{done['id']}", headers=viewer).status_code == 200
    refused = client.post(
        f"{API}/models/{model}/evaluations", json={"split_id": done["split"]["id"]}, headers=viewer
    )
    assert refused.status_code == 403
    assert client.post(f"{API}/evaluations/{done['id']}/cancel", headers=viewer).status_code == 403
    # Someone else's private dataset cannot be frozen (nor even named) by a labeler.
    hidden = client.post(
        f"{API}/models/{model}/evaluations",
        json={"dataset_id": private["id"], "export_id": site["export"]},
        headers=labeler,
    )
    assert hidden.status_code == 404
    # A model made private again: its evaluations disappear for the others.
    conn = sqlite3.connect(config.db_path)
    conn.execute("UPDATE models SET is_public = 0 WHERE id = ?", [model])
    conn.commit()
    conn.close()
    for path in (
        f"/evaluations/{done['id']}",
        f"/evaluations/{done['id']}/images",
        f"/models/{model}/evaluations",
    ):
        assert client.get(f"{API}{path}", headers=labeler).status_code == 404, path
    assert model not in {
        e["model_id"] for e in client.get(f"{API}/evaluations/latest", headers=labeler).json()
    }
    # Cancelling a pending evaluation ends it without running.
    cancelled = client.post(f"{API}/evaluations/{done['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert run_jobs(config) == []


def _snapshot(config: Config, job_id: int, label: str) -> Path:
    """A training run's val snapshot on disk, as the worker leaves it: data.yaml, one image, its label file.
    The image is not in the catalog any more (deleted since the run)."""
    run = config.data_path / "runs" / str(job_id)
    (run / "images" / "val").mkdir(parents=True)
    (run / "labels" / "val").mkdir(parents=True)
    (run / "data.yaml").write_text("names:\n  0: square\n  1: disc\n")
    ok, jpeg = cv2.imencode(".jpg", scene([(1, 1)], [])[0])
    assert ok
    (run / "images" / "val" / "5.jpg").write_bytes(jpeg.tobytes())
    (run / "labels" / "val" / "5.txt").write_text(label)
    return run


def test_a_damaged_snapshot_label_is_refused_not_silently_shortened(
    config: Config, fresh_db: Database
) -> None:
    from appliance.errors import Conflict
    from appliance.evaluation import splits

    _snapshot(config, 7, "0 0.5 0.5 0.25 0.25\n\n1 0.25 0.25 0.1 0.1\n")
    split_id = splits.training_split(fresh_db, config, 7)
    (item,) = splits.split_items(fresh_db, config, split_id)
    height, width = scene([(1, 1)], [])[0].shape[:2]  # from the file's own header: the catalog lost the row
    assert len(item.boxes) == 2 and item.boxes[0][0] == 0
    assert item.boxes[0][1:] == pytest.approx((0.375 * width, 0.375 * height, 0.625 * width, 0.625 * height))
    for job_id, label, line in (
        (8, "0 0.5 0.5 0.25 0.25\n1 0.5 oops 0.1 0.1\n", 2),  # a number that is not one
        (9, "7 0.5 0.5 0.25 0.25\n", 1),  # a class the run does not have
        (10, "0 0.5 0.5 0.25\n", 1),  # a field missing
        (11, "0 0.5 nan 0.25 0.25\n", 1),
    ):
        _snapshot(config, job_id, label)
        with pytest.raises(Conflict, match=rf"labels/val/5.txt, line {line}, is not 'class cx cy w h'"):
            splits.training_split(fresh_db, config, job_id)
    assert fresh_db.execute("SELECT COUNT(*) FROM evaluation_splits").fetchone()[0] == 1  # none half-written
