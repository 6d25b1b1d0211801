"""A model's visibility is its own (owner and public flag copied when it was trained) and survives the deletion
of its dataset; deploying, undeploying and deleting need the right to the model (issue 16: "models outlive their
dataset's privacy"). Also: delete removes the row and the files together, ids are never reused, an ONNX export
downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from litestar.testing import TestClient

from appliance.config import Config
from appliance.db import Database, migrate, open_database, write_transaction
from appliance.db.registry import migrations
from appliance.models.artifacts import artifact_path, model_dir, update_model_metadata
from appliance.models.contracts import NewModel
from appliance.models.registry import register_model
from appliance.training.contracts import TrainParams
from tests.helpers import API, create_dataset, create_user, image_bytes, upload
from tests.inference_support import jpeg, shapes_image


def labeled_dataset(client: TestClient[Any], headers: dict[str, str], name: str, public: bool) -> int:
    """A dataset with two labeled images, enough for POST /training-jobs to accept it."""
    dataset = create_dataset(client, headers, name=name, is_public=public)
    added = upload(
        client,
        headers,
        dataset["id"],
        [(f"{name}-{i}.jpg", image_bytes(seed=hash(name) % 1000 + i)) for i in range(2)],
    )
    for image in added["added"]:
        box = {"class_id": 0, "x1": 2, "y1": 2, "x2": 20, "y2": 20}
        response = client.put(
            f"{API}/images/{image['id']}/annotations", json={"version": 0, "boxes": [box]}, headers=headers
        )
        assert response.status_code == 200, response.text
    return int(dataset["id"])


def train_model(
    client: TestClient[Any], headers: dict[str, str], db: Database, config: Config, dataset_id: int, tmp: Path
) -> int:
    """A training job asked for through the API, then its model registered the way the worker does it."""
    job = client.post(f"{API}/training-jobs", json={"dataset_id": dataset_id, "epochs": 1}, headers=headers)
    assert job.status_code == 201, job.text
    row = db.execute("SELECT params, created_by FROM jobs WHERE id = ?", [job.json()["id"]]).fetchone()
    params = msgspec.json.decode(row[0], type=TrainParams)
    with write_transaction(db):
        db.execute("UPDATE jobs SET status = 'completed' WHERE id = ?", [job.json()["id"]])
    best = tmp / f"best-{job.json()['id']}.pt"
    best.write_bytes(b"weights of job %d" % job.json()["id"])
    model = NewModel(
        job_id=job.json()["id"], dataset_id=dataset_id, created_by=row[1], name="", base_model="yolov8n.yaml",
        classes=params.classes, imgsz=64, params={}, metrics={"map50": 0.5}, snapshot={},
        owner_id=params.dataset_owner_id, is_public=params.dataset_public,
    )  # fmt: skip
    return register_model(db, config, model, best)


def add_onnx_export(db: Database, config: Config, model_id: int, status: str = "completed") -> int:
    """A completed ONNX export on disk (file + metadata.json entry + model_exports row)."""
    path = artifact_path(config, model_id, "onnx", "fp32", 64, False)
    path.write_bytes(b"onnx bytes of model %d" % model_id)
    update_model_metadata(
        config, model_id, {"model_id": model_id}, path.name,
        {"format": "onnx", "precision": "fp32", "imgsz": 64, "dynamic": False},
    )  # fmt: skip
    with write_transaction(db):
        cursor = db.execute(
            """INSERT INTO model_exports (model_id, format, precision, imgsz, dynamic, status, path, created_at)
               VALUES (?, 'onnx', 'fp32', 64, 0, ?, ?, '2026-01-01T00:00:00Z')""",
            [model_id, status, path.name],
        )
    return int(cursor.lastrowid or 0)


def owner_other_and_dataset(
    client: TestClient[Any], admin: dict[str, str], other_role: str, public: bool
) -> tuple[dict[str, str], dict[str, str], int]:
    """(a labeler, another user with `other_role`, the labeler's labeled dataset, public or private)."""
    owner = create_user(client, admin, "owner", "labeler")
    other = create_user(client, admin, f"other-{other_role}", other_role)
    return owner, other, labeled_dataset(client, owner, "owner-data", public=public)


def model_with_export(
    client: TestClient[Any], owner: dict[str, str], db: Database, config: Config, dataset_id: int, tmp: Path
) -> tuple[int, int]:
    """(model id, export id): a model trained by `owner` on the dataset, with a completed ONNX export."""
    model_id = train_model(client, owner, db, config, dataset_id, tmp)
    return model_id, add_onnx_export(db, config, model_id)


def visible_ids(client: TestClient[Any], headers: dict[str, str]) -> set[int]:
    return {m["id"] for m in client.get(f"{API}/models", headers=headers).json()}


def base_ids(client: TestClient[Any], headers: dict[str, str]) -> set[str]:
    return {b["id"] for b in client.get(f"{API}/models/base", headers=headers).json()}


def model_of_a_deleted_dataset(
    client: TestClient[Any], admin: dict[str, str], db: Database, config: Config, tmp: Path, public: bool
) -> tuple[dict[str, str], dict[str, str], dict[str, str], int]:
    """(owner, another labeler, a viewer, model id): the owner's dataset trained, exported, then deleted."""
    owner, other, dataset = owner_other_and_dataset(client, admin, "labeler", public)
    viewer = create_user(client, admin, "viewer", "viewer")
    model_id, _ = model_with_export(client, owner, db, config, dataset, tmp)
    assert client.delete(f"{API}/datasets/{dataset}", headers=owner).status_code == 204
    return owner, other, viewer, model_id


def test_a_private_datasets_model_stays_private_after_the_dataset_is_deleted(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    owner, other, viewer, model_id = model_of_a_deleted_dataset(
        client, admin, fresh_db, config, tmp_path, False
    )
    assert fresh_db.execute("SELECT dataset_id FROM models WHERE id = ?", [model_id]).fetchone() == (None,)

    image = {"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")}
    for headers in (other, viewer):
        assert model_id not in visible_ids(client, headers)
        assert client.get(f"{API}/models/{model_id}", headers=headers).status_code == 404
        inference = client.post(
            f"{API}/inference", files=image, data={"model_id": str(model_id)}, headers=headers
        )
        assert inference.status_code == 404, inference.text
        assert f"model:{model_id}" not in base_ids(client, headers)
    # A labeler can neither deploy it (the box's deployed model would change) nor start from it by its id.
    assert client.post(f"{API}/models/{model_id}/deploy", headers=other).status_code == 404
    own = labeled_dataset(client, other, "lars-own", public=False)
    body = {"dataset_id": own, "base_model": f"model:{model_id}", "epochs": 1}
    started = client.post(f"{API}/training-jobs", json=body, headers=other)
    assert started.status_code == 422 and f"model {model_id}" in started.json()["detail"]
    # Its owner and the admins still have it.
    assert model_id in visible_ids(client, owner) and model_id in visible_ids(client, admin)
    assert f"model:{model_id}" in base_ids(client, owner)
    read = client.get(f"{API}/models/{model_id}", headers=owner).json()
    assert read["is_public"] is False and read["can_manage"] is True
    deployed = client.post(f"{API}/models/{model_id}/deploy", headers=owner)
    assert deployed.status_code == 200 and deployed.json()["deployed"] is True
    # The deployed private model predicts for no one else.
    hidden = client.post(f"{API}/inference", files=image, headers=viewer)
    assert hidden.status_code == 404


def test_a_public_datasets_model_is_seen_by_all_but_managed_by_its_owner(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    owner, other, viewer, model_id = model_of_a_deleted_dataset(
        client, admin, fresh_db, config, tmp_path, True
    )
    for headers in (other, viewer):
        assert model_id in visible_ids(client, headers)
        read = client.get(f"{API}/models/{model_id}", headers=headers).json()
        assert read["is_public"] is True and read["can_manage"] is False
    assert f"model:{model_id}" in base_ids(client, other)
    # Seeing is not managing: a labeler who does not own it may not deploy, undeploy or delete it.
    assert client.post(f"{API}/models/{model_id}/deploy", headers=other).status_code == 403
    assert client.post(f"{API}/models/{model_id}/deploy", headers=viewer).status_code == 403
    assert client.delete(f"{API}/models/{model_id}", headers=other).status_code == 403
    assert client.post(f"{API}/models/{model_id}/deploy", headers=admin).status_code == 200
    assert client.post(f"{API}/models/{model_id}/undeploy", headers=other).status_code == 403
    undeployed = client.post(f"{API}/models/{model_id}/undeploy", headers=owner)
    assert undeployed.status_code == 200 and undeployed.json()["deployed"] is False
    assert client.post(f"{API}/models/{model_id}/undeploy", headers=owner).status_code == 409


def test_a_dataset_made_private_before_the_model_is_registered_keeps_it_private(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    owner, viewer, dataset = owner_other_and_dataset(client, admin, "viewer", public=True)
    job = client.post(f"{API}/training-jobs", json={"dataset_id": dataset, "epochs": 1}, headers=owner)
    params = msgspec.json.decode(
        fresh_db.execute("SELECT params FROM jobs WHERE id = ?", [job.json()["id"]]).fetchone()[0],
        type=TrainParams,
    )
    assert params.dataset_public is True and params.dataset_owner_id is not None
    # Made private while the job waits: the model is registered with the stricter of the two.
    assert (
        client.patch(f"{API}/datasets/{dataset}", json={"is_public": False}, headers=owner).status_code == 200
    )
    best = tmp_path / "best.pt"
    best.write_bytes(b"w")
    model = NewModel(
        job_id=job.json()["id"], dataset_id=dataset, created_by=None, name="flip", base_model="yolov8n.yaml",
        classes=["bolt"], imgsz=64, params={}, metrics={}, snapshot={},
        owner_id=params.dataset_owner_id, is_public=params.dataset_public,
    )  # fmt: skip
    model_id = register_model(fresh_db, config, model, best)
    assert model_id not in visible_ids(client, viewer)
    assert model_id in visible_ids(client, owner)


def test_the_migration_copies_visibility_from_datasets_that_still_exist(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    db = open_database(path)
    names = [m.name for m in migrations._migrations]  # noqa: SLF001
    m007 = migrations._migrations[names.index("m007_model_visibility")]  # noqa: SLF001
    for migration in migrations._migrations[: names.index(m007.name)]:  # noqa: SLF001
        migration.fn(db)
    now = "2026-01-01T00:00:00Z"
    with write_transaction(db):
        for uid in (1, 2):
            db.execute(
                "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, 'x', 'labeler', ?)",
                [uid, f"u{uid}", now],
            )
        db.execute(
            "INSERT INTO datasets (id, name, owner_id, is_public, created_at, updated_at) VALUES (1, 'pub', 1, 1, ?, ?)",
            [now, now],
        )
        db.execute(
            "INSERT INTO datasets (id, name, owner_id, is_public, created_at, updated_at) VALUES (2, 'priv', 1, 0, ?, ?)",
            [now, now],
        )
        for model_id, dataset_id, created_by in ((1, 1, 2), (2, 2, 2), (3, None, 2)):
            db.execute(
                "INSERT INTO models (id, name, dataset_id, created_by, created_at) VALUES (?, 'm', ?, ?, ?)",
                [model_id, dataset_id, created_by, now],
            )
    m007.fn(db)
    rows = db.execute("SELECT id, owner_id, is_public FROM models ORDER BY id").fetchall()
    # The dataset's owner and flag while it exists; a model whose dataset is gone is private to its trainer.
    assert rows == [(1, 1, 1), (2, 1, 0), (3, 2, 0)]
    db.conn.close()
    fresh = open_database(tmp_path / "fresh.db")
    migrate(fresh, tmp_path / "fresh.db")
    columns = {r[1] for r in fresh.execute("PRAGMA table_info(models)")}
    assert {"owner_id", "is_public"} <= columns
    fresh.conn.close()


def test_delete_removes_row_and_files_never_the_deployed_model_and_ids_are_not_reused(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    owner, viewer, dataset = owner_other_and_dataset(client, admin, "viewer", public=True)
    first = train_model(client, owner, fresh_db, config, dataset, tmp_path)
    second, export_id = model_with_export(client, owner, fresh_db, config, dataset, tmp_path)
    assert client.post(f"{API}/models/{second}/deploy", headers=owner).status_code == 200
    refused = client.delete(f"{API}/models/{second}", headers=owner)
    assert refused.status_code == 409 and "deployed" in refused.json()["detail"]
    assert model_dir(config, second).is_dir()
    assert client.delete(f"{API}/models/{second}", headers=viewer).status_code == 403
    # An export in progress holds the model too.
    add_onnx_export(fresh_db, config, first, status="pending")
    with write_transaction(fresh_db):
        job = fresh_db.execute(
            "INSERT INTO jobs (kind, status, created_at) VALUES ('export', 'pending', '2026-01-01T00:00:00Z')"
        ).lastrowid
        fresh_db.execute("UPDATE model_exports SET job_id = ? WHERE model_id = ?", [job, first])
    busy = client.delete(f"{API}/models/{first}", headers=owner)
    assert busy.status_code == 409 and "export" in busy.json()["detail"]
    with write_transaction(fresh_db):
        fresh_db.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ?", [job])

    assert client.post(f"{API}/models/{second}/undeploy", headers=owner).status_code == 200
    gone = client.delete(f"{API}/models/{second}", headers=owner)
    assert gone.status_code == 204, gone.text
    assert client.get(f"{API}/models/{second}", headers=owner).status_code == 404
    assert not model_dir(config, second).exists()
    assert not [p for p in (config.data_path / "models").iterdir() if p.name.startswith(".deleted-")]
    assert fresh_db.execute("SELECT COUNT(*) FROM model_exports WHERE id = ?", [export_id]).fetchone() == (0,)
    # The next model gets a new id, never the deleted one's.
    third = train_model(client, owner, fresh_db, config, dataset, tmp_path)
    assert third > second
    assert client.delete(f"{API}/models/{third}", headers=admin).status_code == 204
    fourth = train_model(client, owner, fresh_db, config, dataset, tmp_path)
    assert fourth > third


def test_an_onnx_export_downloads_and_engines_and_unfinished_exports_do_not(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    owner, stranger, dataset = owner_other_and_dataset(client, admin, "labeler", public=False)
    model_id, export_id = model_with_export(client, owner, fresh_db, config, dataset, tmp_path)
    url = f"{API}/models/{model_id}/exports/{export_id}/file"
    got = client.get(url, headers=owner)
    assert got.status_code == 200, got.text
    assert got.content == b"onnx bytes of model %d" % model_id
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("attachment") and "model_64.onnx" in disposition
    assert client.get(url, headers=stranger).status_code == 404
    assert (
        client.get(f"{API}/models/{model_id}/exports/{export_id + 99}/file", headers=owner).status_code == 404
    )
    with write_transaction(fresh_db):
        fresh_db.execute("UPDATE model_exports SET status = 'running' WHERE id = ?", [export_id])
    assert client.get(url, headers=owner).status_code == 409
    with write_transaction(fresh_db):
        fresh_db.execute(
            "UPDATE model_exports SET status = 'completed', format = 'engine' WHERE id = ?", [export_id]
        )
    assert client.get(url, headers=owner).status_code == 404
