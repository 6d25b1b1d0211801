"""GET /training-jobs/plan: labeled images and boxes per class, recommended settings, warnings and a time estimate
that says how it was made (measured on this box, or the fixed figure before any training finished here)."""

from __future__ import annotations

import json
from typing import Any

from litestar.testing import TestClient

from appliance.db import Database, write_transaction
from appliance.training.plan import DEFAULT_RATE, model_scale, recommend
from tests.helpers import API, create_dataset, create_user, image_bytes, upload


def dataset_with_labels(client: TestClient[Any], admin: dict[str, str]) -> int:
    """3 labeled images with a bolt each, 1 unlabeled image holding an unreviewed model proposal (64x48 px)."""
    dataset = create_dataset(client, admin, name="plan", classes=["bolt", "nut"])
    images = upload(
        client, admin, dataset["id"], [(f"p{i}.jpg", image_bytes(seed=500 + i)) for i in range(4)]
    )
    ids = [i["id"] for i in images["added"]]
    for image_id in ids[:3]:
        box = {"class_id": 0, "x1": 4, "y1": 4, "x2": 30, "y2": 30}
        assert (
            client.put(
                f"{API}/images/{image_id}/annotations", json={"version": 0, "boxes": [box]}, headers=admin
            ).status_code
            == 200
        )
    proposal = {"class_id": 1, "x1": 4, "y1": 4, "x2": 30, "y2": 30, "source": "model", "confidence": 0.6}
    assert (
        client.put(
            f"{API}/images/{ids[3]}/annotations",
            json={"version": 0, "boxes": [proposal], "status": "unlabeled"},
            headers=admin,
        ).status_code
        == 200
    )
    return int(dataset["id"])


def test_plan_counts_per_class_warns_recommends_and_estimates(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database
) -> None:
    dataset_id = dataset_with_labels(client, admin)
    plan = client.get(f"{API}/training-jobs/plan", params={"dataset_id": dataset_id}, headers=admin)
    assert plan.status_code == 200, plan.text
    got = plan.json()
    assert got["labeled_images"] == 3 and got["unlabeled_images"] == 1 and got["boxes"] == 3
    assert got["pending_review_images"] == 1 and got["background_images"] == 0
    assert [(c["name"], c["images"], c["boxes"]) for c in got["classes"]] == [("bolt", 3, 3), ("nut", 0, 0)]
    assert got["from_scratch"] is True
    warnings = " | ".join(got["warnings"])
    assert "from scratch on 3 labeled images" in warnings
    assert "'nut' has no labeled box" in warnings and "'bolt' has only 3 labeled boxes" in warnings
    assert "suggested boxes nobody reviewed" in warnings
    # 64x48 images: a 320 px input is enough; from scratch on a small set: many epochs.
    assert (got["recommended_epochs"], got["recommended_imgsz"], got["recommended_batch"]) == (300, 320, 8)
    assert got["gpus"] == 0 and got["device"] == "cpu"
    estimate = got["estimate"]
    assert "no training has finished on this box yet" in estimate["basis"]
    assert estimate["seconds"] == round(DEFAULT_RATE["cpu"] * 3 * 300 * (320 / 640) ** 2, 1)
    # Which engine and device: PyTorch on this CPU (by name), and what the trained model then runs on here.
    assert estimate["engine"] == "PyTorch (ultralytics)" and estimate["device_name"].endswith("cores")
    assert estimate["inference"] == "openvino"

    # Fine-tuning: fewer epochs, no "from scratch" warning; very few epochs are called out.
    tuned = client.get(
        f"{API}/training-jobs/plan",
        params={"dataset_id": dataset_id, "base_model": "weights:yolo11s.pt", "epochs": 3, "imgsz": 640},
        headers=admin,
    ).json()
    assert tuned["from_scratch"] is False and tuned["recommended_epochs"] == 100
    assert not any("from scratch" in w for w in tuned["warnings"])
    assert any("3 epochs is very few" in w for w in tuned["warnings"])
    assert tuned["estimate"]["seconds"] == round(DEFAULT_RATE["cpu"] * 3 * 3 * 3.3, 1)


def test_the_estimate_is_measured_from_trainings_finished_on_this_box(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database
) -> None:
    dataset_id = dataset_with_labels(client, admin)
    result = {
        "device": "cpu",
        "seconds": 100.0,
        "epochs_done": 10,
        "snapshot": {"train_images": 8, "val_images": 2},
    }
    with write_transaction(fresh_db):
        fresh_db.execute(
            """INSERT INTO jobs (kind, status, params, result, created_at)
               VALUES ('train', 'completed', ?, ?, '2026-01-01T00:00:00Z')""",
            [json.dumps({"imgsz": 640, "base_model": "yolov8n.yaml"}), json.dumps(result)],
        )
    # 100 s for 10 epochs of 10 images at 640 px (nano): 1 s per image-epoch.
    plan = client.get(
        f"{API}/training-jobs/plan",
        params={"dataset_id": dataset_id, "epochs": 5, "imgsz": 640},
        headers=admin,
    ).json()
    assert plan["estimate"]["seconds"] == 15.0 and plan["estimate"]["per_epoch_s"] == 3.0
    assert (
        "measured on this box" in plan["estimate"]["basis"]
        and "1 completed training" in plan["estimate"]["basis"]
    )


def test_plan_refuses_what_the_caller_may_not_read_and_bad_values(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    dataset_id = dataset_with_labels(client, admin)
    labeler = create_user(client, admin, "planner", "labeler")
    assert (
        client.get(
            f"{API}/training-jobs/plan", params={"dataset_id": dataset_id}, headers=labeler
        ).status_code
        == 404
    )
    for params in (
        {"dataset_id": dataset_id, "imgsz": 5000},
        {"dataset_id": 0},
        {"dataset_id": dataset_id, "device": "x"},
    ):
        assert client.get(f"{API}/training-jobs/plan", params=params, headers=admin).status_code == 400, (
            params
        )


def test_recommendations_follow_the_data() -> None:
    assert model_scale("yolov8n.yaml") == "n" and model_scale("weights:yolo11m.pt") == "m"
    assert model_scale("model:3") == "n"
    # Tiny objects (1% of a 1920 px image): a larger input, a smaller batch to fit the memory.
    epochs, imgsz, batch, why = recommend(2000, False, 1920, 0.01)
    assert (epochs, imgsz, batch) == (50, 960, 4) and any("small at 640" in w for w in why)
    assert recommend(100, True, 1280, 0.2)[:3] == (300, 640, 8)
