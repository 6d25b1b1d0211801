"""Model API: export jobs (ONNX on CPU, TensorRT refused here), deploy, POST /inference, suggestions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.db import Database, open_database
from appliance.jobs.service import claim_next_job, create_job, get_job
from appliance.jobs.worker import run_one
from appliance.models import jobs  # noqa: F401 - registers the export job kind
from tests.helpers import (
    API,
    REPO,
    ServerProcess,
    create_dataset,
    create_user,
    setup_admin,
    upload,
)
from tests.inference_support import (
    copy_exported_model,
    exported_data_dir,
    insert_model,
    jpeg,
    shapes_image,
)

# --- validation and refusals (fast) -----------------------------------------------------------


def test_export_validation_and_engine_refused_here(
    client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"not used: nothing is exported in this test")
    db = fresh_db
    model_id = insert_model(db, config, weights)
    url = f"{API}/models/{model_id}/exports"
    engine = client.post(url, json={"format": "engine", "half": True}, headers=admin)
    assert (
        engine.status_code == 422 and "TensorRT is not available on this machine" in engine.json()["detail"]
    )
    half_onnx = client.post(url, json={"format": "onnx", "half": True}, headers=admin)
    assert half_onnx.status_code == 422 and "TensorRT engines" in half_onnx.json()["detail"]
    odd = client.post(url, json={"format": "onnx", "imgsz": 100}, headers=admin)
    assert odd.status_code == 400 and "imgsz: Expected `int` that's a multiple of 32" in odd.json()["detail"]
    unknown = client.post(url, json={"format": "pt"}, headers=admin)
    assert unknown.status_code == 400
    extra = client.post(url, json={"format": "onnx", "path": "/etc/passwd"}, headers=admin)
    assert extra.status_code == 400
    missing = client.post(f"{API}/models/999/exports", json={"format": "onnx"}, headers=admin)
    assert missing.status_code == 404
    queued = client.post(url, json={"format": "onnx", "imgsz": 64}, headers=admin)
    assert queued.status_code == 201, queued.text
    assert queued.json()["status"] == "pending" and queued.json()["job_id"]
    again = client.post(url, json={"format": "onnx", "imgsz": 64}, headers=admin)
    assert again.status_code == 409
    cancelled = client.post(f"{url}/{queued.json()['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"{url}/{queued.json()['id']}/cancel", headers=admin).status_code == 409
    queued = client.post(url, json={"format": "onnx", "imgsz": 64}, headers=admin)
    assert queued.status_code == 201
    # Not exported yet: deploy and inference explain why.
    deploy = client.post(f"{API}/models/{model_id}/deploy", headers=admin)
    assert deploy.status_code == 409 and "export" in deploy.json()["detail"]
    infer = client.post(
        f"{API}/inference", files={"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")},
        data={"model_id": str(model_id)}, headers=admin,
    )  # fmt: skip
    assert infer.status_code == 409 and "not been exported" in infer.json()["detail"]
    listed = client.get(f"{API}/models", headers=admin).json()
    assert listed[0]["id"] == model_id and [e["status"] for e in listed[0]["exports"]] == [
        "cancelled",
        "pending",
    ]
    assert listed[0]["ready"] is False and listed[0]["has_weights"] is True


def test_engine_job_fails_with_a_clear_reason(config: Config, fresh_db: Database, tmp_path: Path) -> None:
    """A queued engine export reaching a worker without TensorRT fails; it never crashes the worker."""
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")
    db = fresh_db
    model_id = insert_model(db, config, weights)
    job_id = create_job(
        db, "export", {"model_id": model_id, "format": "engine", "precision": "fp16", "imgsz": 64},
        user_id=None, model_id=model_id,
    )  # fmt: skip
    job = claim_next_job(db, ["export"])
    assert job is not None and job["id"] == job_id
    assert run_one(job, db, config) == "failed"
    assert "TensorRT is not available on this machine" in get_job(db, job_id)["error"]


def test_malformed_export_params_fail_the_job_with_the_reason(config: Config, fresh_db: Database) -> None:
    job_id = create_job(fresh_db, "export", {"model_id": "one", "format": "onnx"}, user_id=None)
    job = claim_next_job(fresh_db, ["export"])
    assert job is not None and job["id"] == job_id
    assert run_one(job, fresh_db, config) == "failed"
    assert "malformed params" in get_job(fresh_db, job_id)["error"]


def test_inference_rejects_bad_input(client: TestClient[Any], admin: dict[str, str]) -> None:
    url = f"{API}/inference"
    no_model = client.post(
        url, files={"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")}, headers=admin
    )
    assert no_model.status_code == 409 and "no model is deployed" in no_model.json()["detail"]
    unknown = client.post(
        url,
        files={"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")},
        data={"model_id": "42"},
        headers=admin,
    )
    assert unknown.status_code == 404 and "model 42" in unknown.json()["detail"]
    missing = client.post(url, files={"picture": ("a.jpg", b"x", "image/jpeg")}, headers=admin)
    assert missing.status_code == 400 and "missing required field `image`" in missing.json()["detail"], (
        missing.text
    )
    for field, value in (("precision", "fp64"), ("confidence", "1.5"), ("max_det", "0"), ("model_id", "0")):
        form = {"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")}
        refused = client.post(url, files=form, data={field: value}, headers=admin)
        assert refused.status_code == 400 and field in refused.json()["detail"], (field, refused.text)
    client.cookies.clear()
    anonymous = client.post(url, files={"image": ("a.jpg", b"x", "image/jpeg")})
    assert anonymous.status_code == 401


# --- real export job --------------------------------------------------------------------------


@pytest.mark.slow
def test_export_job_writes_onnx_and_metadata(tiny_yolo: Path) -> None:
    root = exported_data_dir(str(tiny_yolo))
    folder = root / "models" / "1"
    assert (folder / "model_320.onnx").is_file()
    assert not list(folder.glob(".export-*")) and not list(folder.glob(".*.tmp"))
    meta = json.loads((folder / "metadata.json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["square", "disc"]
    entry = meta["artifacts"]["model_320.onnx"]
    assert entry["precision"] == "fp32" and entry["imgsz"] == 320 and entry["opset"] == 17
    # A batch axis (cameras sharing the model run one batch), height and width fixed.
    assert entry["inputs"] == [{"name": "images", "shape": ["batch", 3, 320, 320], "dtype": "float"}]
    assert entry["outputs"][0]["shape"] == ["batch", 6, 2100]
    assert entry["source_job_id"] == 1 and entry["versions"]["ultralytics"]
    db = open_database(root / "appliance.db")
    export = next(db.query("SELECT * FROM model_exports WHERE model_id = 1"))
    assert export["status"] == "completed" and export["path"] == "model_320.onnx"
    job = get_job(db, export["job_id"])
    assert job["status"] == "completed" and job["progress"]["percent"] == 100
    db.conn.close()


@pytest.mark.slow
def test_deploy_infer_and_suggest_through_the_api(
    tiny_yolo: Path, client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database
) -> None:
    db = fresh_db
    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, db)
    model = client.get(f"{API}/models/{model_id}", headers=admin).json()
    assert model["ready"] is True and model["exports"][0]["status"] == "completed"
    deployed = client.post(f"{API}/models/{model_id}/deploy", headers=admin)
    assert deployed.status_code == 200 and deployed.json()["deployed"] is True
    # A second model deployed takes the place of the first, atomically.
    other = copy_second_model(db, config, model_id)
    assert client.post(f"{API}/models/{other}/deploy", headers=admin).status_code == 200
    flags = dict(db.execute("SELECT id, deployed FROM models").fetchall())
    assert flags == {model_id: 0, other: 1}
    response = client.post(
        f"{API}/inference", files={"image": ("a.jpg", jpeg(shapes_image(1)), "image/jpeg")},
        data={"confidence": "0.05", "iou": "0.45", "max_det": "5"}, headers=admin,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == other and (body["width"], body["height"]) == (200, 150)
    # OpenVINO runs it on a box without an NVIDIA GPU (this one), on the CPU, at FP32.
    assert 0 < len(body["detections"]) <= 5 and body["backend"] == "openvino"
    assert body["device"] and body["precision"] == "fp32"
    first = body["detections"][0]
    assert set(first) == {"class_id", "class_name", "confidence", "box"} and first["class_name"] in (
        "square",
        "disc",
    )
    assert 0 <= first["box"]["x1"] < first["box"]["x2"] <= 200
    assert {"preprocess_ms", "inference_ms", "postprocess_ms"} <= set(body["timings"])
    bad = client.post(
        f"{API}/inference", files={"image": ("a.txt", b"hello there", "text/plain")}, headers=admin
    )
    assert bad.status_code == 415 and "not an image" in bad.json()["detail"]
    truncated = client.post(
        f"{API}/inference",
        files={"image": ("a.jpg", jpeg(shapes_image(1))[:200], "image/jpeg")},
        headers=admin,
    )
    assert truncated.status_code == 422
    # Suggestions on a stored image of a dataset whose classes share the model's names.
    dataset = create_dataset(client, admin, name="shapes", classes=["disc", "square"])
    image_id = upload(client, admin, dataset["id"], [("s.jpg", jpeg(shapes_image(2)))])["added"][0]["id"]
    suggestions = client.post(
        f"{API}/images/{image_id}/suggestions", json={"confidence": 0.05}, headers=admin
    )
    assert suggestions.status_code == 200, suggestions.text
    got = suggestions.json()
    assert got["model_id"] == other and got["detections"]
    for d in got["detections"]:  # mapped to the dataset's own class order
        assert ["disc", "square"][d["class_id"]] == d["class_name"]
    # A model trained on someone's private dataset predicts for nobody else, deployed or not.
    private = create_dataset(client, admin, name="private", classes=["disc", "square"])
    with db.conn:
        db.execute("UPDATE models SET dataset_id = ? WHERE id = ?", [private["id"], other])
    writer = create_user(client, admin, "wanda", "labeler")
    theirs = create_dataset(client, writer, name="theirs", classes=["disc", "square"])
    their_image = upload(client, writer, theirs["id"], [("t.jpg", jpeg(shapes_image(3)))])["added"][0]["id"]
    hidden = client.post(f"{API}/images/{their_image}/suggestions", json={}, headers=writer)
    assert hidden.status_code == 404 and f"model {other}" in hidden.json()["detail"], hidden.text
    hidden = client.post(
        f"{API}/inference", files={"image": ("a.jpg", jpeg(shapes_image(3)), "image/jpeg")}, headers=writer
    )
    assert hidden.status_code == 404, hidden.text


def copy_second_model(db: Any, config: Config, first_id: int) -> int:
    import shutil

    from appliance.db import write_transaction

    row = next(db.query("SELECT * FROM models WHERE id = ?", [first_id]))
    with write_transaction(db):
        new_id = int(db["models"].insert({**row, "id": None, "deployed": 0, "name": "second"}).last_pk)
    shutil.copytree(config.data_path / "models" / str(first_id), config.data_path / "models" / str(new_id))
    return new_id


@pytest.mark.slow
def test_inference_over_http_and_the_web_process_never_imports_torch(tiny_yolo: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = load_config(env={}, data_dir=str(data))
    server = ServerProcess(data)
    server.start()
    try:
        token = setup_admin(httpx.Client(base_url=server.url), server.data_dir / "appliance.db")
        db = open_database(config.db_path)
        model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, db)
        db.conn.close()
        with httpx.Client(base_url=server.url, headers=token, timeout=30) as http:
            assert http.post(f"{API}/models/{model_id}/deploy").status_code == 200
            for seed in range(2):
                response = http.post(f"{API}/inference", files={"image": ("a.jpg", jpeg(shapes_image(seed)), "image/jpeg")},
                                     data={"confidence": "0.05"})  # fmt: skip
                assert response.status_code == 200, response.text
                assert response.json()["detections"]
        assert server.process is not None
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "openvino" in maps  # the request really ran in this process
        assert "libtorch" not in maps and "torch/lib" not in maps
    finally:
        server.stop()


@pytest.mark.slow
def test_inference_request_imports_no_torch_or_ultralytics(tiny_yolo: Path, tmp_path: Path) -> None:
    """sys.modules of a process that created the app and served an inference request."""
    source = exported_data_dir(str(tiny_yolo))
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from litestar.testing import TestClient
        from appliance.config import load_config
        from appliance.db import open_database, migrate
        from appliance.server import create_app
        from tests.helpers import LOCAL_URL, setup_admin
        from tests.inference_support import copy_exported_model, jpeg, shapes_image
        config = load_config(env={{}}, data_dir={str(tmp_path / "data")!r})
        with TestClient(base_url=LOCAL_URL, app=create_app(config)) as client:
            headers = setup_admin(client)
            db = open_database(config.db_path)
            copy_exported_model(Path({str(source)!r}), config, db)
            r = client.post("/api/v1/inference", files={{"image": ("a.jpg", jpeg(shapes_image(0)), "image/jpeg")}},
                            data={{"model_id": "1", "confidence": "0.05"}}, headers=headers)
            assert r.status_code == 200, r.text
        print(sorted(m for m in ("torch", "ultralytics", "torchvision", "tensorrt") if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_artifact_selection_prefers_engines_only_where_tensorrt_runs(config: Config) -> None:
    from appliance.models.artifacts import artifact_name, artifacts_on_disk, update_model_metadata
    from appliance.models.loading import loadable_artifacts, select_artifact

    folder = config.data_path / "models" / "5"
    folder.mkdir(parents=True)
    entries = [("onnx", "fp32"), ("engine", "fp16"), ("engine", "int8")]
    for fmt, precision in entries:
        name = artifact_name(fmt, precision, 320, False)
        (folder / name).write_bytes(b"x")
        entry = {"format": fmt, "precision": precision, "imgsz": 320, "dynamic": False}
        update_model_metadata(config, 5, {"classes": []}, name, entry)
    # A name in metadata.json that we would never produce is never offered for loading.
    (folder / "evil.onnx").write_bytes(b"x")
    update_model_metadata(
        config, 5, {}, "evil.onnx", {"format": "onnx", "precision": "fp32", "imgsz": 320, "dynamic": False}
    )
    assert sorted(a.file for a in artifacts_on_disk(config, 5)) == [
        "model_320.onnx", "model_320_fp16.engine", "model_320_int8.engine",
    ]  # fmt: skip
    # The camera's view of the same files: the names and paths its model key is made of.
    assert sorted((a["file"], a["path"]) for a in loadable_artifacts(config, 5))[0] == (
        "model_320.onnx",
        folder / "model_320.onnx",
    )
    row = {"id": 5, "imgsz": 320}
    assert select_artifact(config, row, None, with_tensorrt=False).file == "model_320.onnx"
    assert select_artifact(config, row, "fp16", with_tensorrt=False).file == "model_320.onnx"
    assert select_artifact(config, row, None, with_tensorrt=True).file == "model_320_fp16.engine"
    assert select_artifact(config, row, "fp32", with_tensorrt=True).info.format == "engine"
    # An INT8 engine never measured by the accuracy gate (built before it existed) is never run.
    assert select_artifact(config, row, "int8", with_tensorrt=True).file == "model_320_fp16.engine"
    gate = {
        "engine": "tensorrt", "device": "Orin", "precision": "int8", "baseline_precision": "fp16",
        "val_images": 20, "val_labels": 40, "baseline_map50_95": 0.5, "candidate_map50_95": 0.496,
        "map_drop_points": 0.4, "baseline_ms": 4.0, "candidate_ms": 3.0, "speedup": 1.33,
        "max_drop_points": 1.0, "min_speedup": 1.05, "accepted": True, "reason": "INT8 accepted",
    }  # fmt: skip
    int8 = {"format": "engine", "precision": "int8", "imgsz": 320, "dynamic": False}
    update_model_metadata(config, 5, {}, "model_320_int8.engine", {**int8, "gate": gate})
    assert select_artifact(config, row, "int8", with_tensorrt=True).file == "model_320_int8.engine"
    update_model_metadata(
        config, 5, {}, "model_320_int8.engine", {**int8, "gate": {**gate, "accepted": False}}
    )
    assert select_artifact(config, row, "int8", with_tensorrt=True).file == "model_320_fp16.engine"


def test_metadata_json_keeps_its_keys_and_a_malformed_one_is_named(config: Config) -> None:
    from appliance.models.artifacts import (
        MalformedMetadata,
        artifacts_on_disk,
        metadata_path,
        read_model_metadata,
        update_model_metadata,
    )

    fields = {"model_id": 3, "name": "m", "classes": ["a", "b"], "imgsz": 64, "training_job_id": None}
    entry = {"format": "onnx", "precision": "fp32", "imgsz": 64, "dynamic": False, "opset": 17}
    update_model_metadata(config, 3, fields, "model_64.onnx", entry)
    (metadata_path(config, 3).parent / "model_64.onnx").write_bytes(b"x")
    written = json.loads(metadata_path(config, 3).read_text())
    assert written == {
        **fields,
        "classes": [{"name": "a", "color": ""}, {"name": "b", "color": ""}],
        "artifacts": {"model_64.onnx": entry},
    }
    assert read_model_metadata(config, 3).artifacts["model_64.onnx"].opset == 17
    metadata_path(config, 3).write_text('{"artifacts": {"model_64.onnx": {"format": "pt"}}}')
    with pytest.raises(MalformedMetadata, match="models/3/metadata.json is malformed"):
        read_model_metadata(config, 3)
    assert artifacts_on_disk(config, 3) == []  # unreadable: no exports to load, as before


def test_int8_calibration_reads_the_training_snapshot_and_keeps_a_cache(config: Config) -> None:
    """The calibration feed without a GPU: sampling, our letterbox, batches, the cache file (TensorRT faked)."""
    from types import SimpleNamespace

    import numpy as np

    from appliance.inference.tensorrt_build import calibration_batches, make_calibrator
    from appliance.models.jobs import calibration_images

    snapshot = config.data_path / "runs" / "7" / "images" / "train"
    snapshot.mkdir(parents=True)
    for seed in range(10):
        (snapshot / f"{seed:03d}.jpg").write_bytes(jpeg(shapes_image(seed)))
    (snapshot / "notes.txt").write_text("not an image")
    picked = calibration_images(config, 7, 4)
    assert [p.name for p in picked] == ["000.jpg", "002.jpg", "005.jpg", "007.jpg"]
    assert calibration_images(config, None, 4) == []
    batches = calibration_batches(picked, 64)
    assert len(batches) == 4 and batches[0].shape == (1, 3, 64, 64) and batches[0].dtype == np.float32

    copied: list[np.ndarray] = []
    trt = SimpleNamespace(IInt8EntropyCalibrator2=type("Base", (), {"__init__": lambda self: None}))
    cuda = SimpleNamespace(mem_alloc=lambda n: 1234, memcpy_htod=lambda dst, src: copied.append(src))
    seen: list[float] = []
    cache = config.data_path / "models" / "1" / "calibration_64.cache"
    calibrator = make_calibrator(trt, cuda, batches, cache, lambda p, s: seen.append(p))
    assert calibrator.get_batch_size() == 1 and calibrator.read_calibration_cache() is None
    feeds = [calibrator.get_batch(["images"]) for _ in range(5)]
    assert feeds[:4] == [[1234]] * 4 and feeds[4] is None and len(copied) == 4
    assert seen == sorted(seen) and seen[-1] == 50
    calibrator.write_calibration_cache(b"calibration table")
    assert calibrator.read_calibration_cache() == b"calibration table"
