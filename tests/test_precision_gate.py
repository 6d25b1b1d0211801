"""The accuracy gate: INT8 (NNCF), BF16 and FP16 measured against FP32 on the model's frozen validation split
and offered only when they keep mAP50-95 within the limit and run faster; a broken INT8 is refused with the
numbers; nothing unevaluated is ever run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import pytest
from litestar.testing import TestClient

from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.inference.openvino_backend import openvino_available
from appliance.inference.pipeline import letterbox
from appliance.models.precision_gate import decide
from tests.helpers import API
from tests.inference_support import add_training_run, copy_exported_model, exported_data_dir, oracle_onnx

pytestmark = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


def test_the_decision_says_why_with_the_numbers() -> None:
    common = {"precision": "int8", "baseline_precision": "fp32", "max_drop_points": 1.0, "min_speedup": 1.05}
    ok, reason = decide(
        **common, baseline_map=0.62, candidate_map=0.615, baseline_ms=20, candidate_ms=10, labels=50
    )
    assert ok and reason.startswith("INT8 accepted") and "0.615 against 0.620" in reason and "2.00x" in reason
    ok, reason = decide(
        **common, baseline_map=0.62, candidate_map=0.55, baseline_ms=20, candidate_ms=10, labels=50
    )
    assert (
        not ok
        and "loses too much accuracy" in reason
        and "a drop of 7.00 points (at most 1 allowed)" in reason
    )
    ok, reason = decide(
        **common, baseline_map=0.62, candidate_map=0.62, baseline_ms=20, candidate_ms=20, labels=50
    )
    assert not ok and "not faster" in reason and "1.00x (at least 1.05x needed)" in reason
    ok, reason = decide(
        **common, baseline_map=0.6, candidate_map=0.4, baseline_ms=20, candidate_ms=30, labels=50
    )
    assert not ok and "loses too much accuracy" in reason and "; and it is not faster" in reason
    ok, reason = decide(
        **common, baseline_map=0.0, candidate_map=0.0, baseline_ms=20, candidate_ms=10, labels=0
    )
    assert not ok and "no labeled box" in reason


@pytest.mark.slow
def test_the_gate_refuses_an_int8_model_that_loses_accuracy_and_says_by_how_much(
    tiny_yolo: Path, tmp_path: Path, config: Config, fresh_db: Database
) -> None:
    """Calibrated on purpose with the wrong preprocessing (pixels 0..255 where the model sees 0..1), the INT8
    model's activation ranges are wrong by 255x: the gate measures the drop on the frozen validation split and
    refuses it, numbers included. Calibrated properly (our letterbox), the same quantisation keeps far more."""
    from appliance.evaluation.splits import training_split_items
    from appliance.models.precision_child import SplitFile, run

    onnx = tmp_path / "model_320.onnx"
    shutil.copyfile(oracle_onnx(str(tiny_yolo), 320), onnx)
    job_id = add_training_run(fresh_db, config, onnx, images=30)
    classes, items = training_split_items(fresh_db, config, job_id)

    def unscaled(path: Path) -> Any:
        return letterbox(cv2.imread(str(path)), 320)[0] * 255.0

    common = {
        "onnx": onnx, "precision": "int8", "imgsz": 320, "device": "CPU",
        "run_dir": config.data_path / "runs" / str(job_id), "split": SplitFile(classes=classes, items=items),
        "calib_images": 300, "max_drop_points": 1.0, "min_speedup": 1.05,
    }  # fmt: skip
    broken = run(out=tmp_path / "model_320_int8.xml", transform=unscaled, **common)
    gate = broken.gate
    assert gate.baseline_map50_95 > 0.2  # FP32 against its own boxes (both classes score alike: not 1)
    assert gate.map_drop_points > 1.0 and not gate.accepted and broken.file is None
    train = list((config.data_path / "runs" / str(job_id) / "images" / "train").iterdir())
    assert (
        gate.calibration_images == len(train) and gate.val_images == len(items) >= 8
    )  # never the val images
    assert gate.val_labels == sum(len(item.boxes) for item in items) > len(items)
    assert "INT8 refused: it loses too much accuracy" in gate.reason
    assert (
        f"mAP50-95 {gate.candidate_map50_95:.3f} against {gate.baseline_map50_95:.3f} for FP32" in gate.reason
    )
    assert f"a drop of {gate.map_drop_points:.2f} points (at most 1 allowed)" in gate.reason
    assert gate.baseline_ms > 0 and gate.candidate_ms > 0
    assert not (tmp_path / "model_320_int8.xml").exists() and not list(tmp_path.glob(".*tmp*"))

    proper = run(out=tmp_path / "model_320_int8.xml", **common)
    assert proper.gate.candidate_map50_95 > gate.candidate_map50_95 + 0.1
    # Kept exactly when accepted (this CPU's INT8 speed decides it: measured, never assumed).
    assert (tmp_path / "model_320_int8.xml").exists() == proper.gate.accepted == (proper.file is not None)


@pytest.mark.slow
def test_a_bf16_export_is_measured_and_runs_only_if_accepted(
    tiny_yolo: Path, client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database
) -> None:
    from appliance.jobs.service import claim_next_job
    from appliance.jobs.worker import run_one
    from appliance.models import jobs  # noqa: F401 - registers the export job kind
    from appliance.models.loading import load_detector_for_model
    from appliance.models.registry import model_row

    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, fresh_db)
    add_training_run(fresh_db, config, oracle_onnx(str(tiny_yolo), 320), model_id=model_id)
    url = f"{API}/models/{model_id}/exports"
    assert (
        client.post(url, json={"format": "openvino", "precision": "fp32"}, headers=admin).status_code == 422
    )
    assert client.post(url, json={"format": "engine", "precision": "bf16"}, headers=admin).status_code == 422
    created = client.post(url, json={"format": "openvino", "precision": "bf16", "imgsz": 320}, headers=admin)
    assert created.status_code == 201, created.text
    job = claim_next_job(fresh_db, ["export"])
    assert job is not None and run_one(job, fresh_db, config) == "completed"

    export = next(e for e in client.get(url, headers=admin).json() if e["id"] == created.json()["id"])
    gate = export["metadata"]["gate"]
    assert (
        gate["engine"] == "openvino" and gate["precision"] == "bf16" and gate["baseline_precision"] == "fp32"
    )
    assert gate["val_images"] >= 6 and gate["baseline_map50_95"] > 0.2 and gate["reason"]
    runs = load_detector_for_model(config, model_row(fresh_db, model_id))
    model = client.get(f"{API}/models/{model_id}", headers=admin).json()
    if gate["accepted"]:
        assert export["status"] == "completed" and export["file"] == "model_320_bf16.xml"
        assert runs.plan.precision == "bf16" and model["runs_on"] == "openvino bf16"
    else:
        assert export["status"] == "refused" and export["file"] is None
        assert runs.plan.precision == "fp32" and model["runs_on"] == "openvino fp32"
        assert not (config.data_path / "models" / str(model_id) / "model_320_bf16.xml").exists()
    metadata = json.loads((config.data_path / "models" / str(model_id) / "metadata.json").read_text())
    assert ("model_320_bf16.xml" in metadata["artifacts"]) == gate["accepted"]


@pytest.mark.slow
def test_a_model_without_its_training_snapshot_is_not_quantised_blind(
    tiny_yolo: Path, client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database
) -> None:
    from appliance.jobs.service import claim_next_job
    from appliance.jobs.worker import run_one
    from appliance.models import jobs  # noqa: F401 - registers the export job kind

    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, fresh_db)
    created = client.post(
        f"{API}/models/{model_id}/exports", json={"format": "openvino", "int8": True}, headers=admin
    )
    assert created.status_code == 201
    job = claim_next_job(fresh_db, ["export"])
    assert job is not None and run_one(job, fresh_db, config) == "failed"
    export = client.get(f"{API}/models/{model_id}/exports", headers=admin).json()[-1]
    assert export["status"] == "failed" and "no training run on this box" in export["error"]
    too_many = client.post(
        f"{API}/models/{model_id}/exports",
        json={"format": "openvino", "int8": True, "calib_images": 301},
        headers=admin,
    )
    assert too_many.status_code == 422 and "between 1 and 300" in too_many.json()["detail"]


def test_m021_keeps_every_export_and_lets_openvino_ones_in(tmp_path: Path) -> None:
    """model_exports is rebuilt for its new CHECK (SQLite cannot alter one): same rows, ids and index."""
    import sqlite3

    from appliance.db import migrate, open_database
    from appliance.db.registry import migrations

    path = tmp_path / "catalog.db"
    db = open_database(path)
    migrations.apply(db, stop_before="m020_model_engine_pin")
    now = now_iso()
    with write_transaction(db):
        db.execute("INSERT INTO models (id, name, created_at) VALUES (1, 'm', ?)", [now])
        db.execute(
            """INSERT INTO model_exports (id, model_id, format, precision, imgsz, status, path, metadata, created_at)
               VALUES (7, 1, 'engine', 'int8', 320, 'completed', 'model_320_int8.engine', '{"x": 1}', ?)""",
            [now],
        )
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO model_exports (model_id, format, imgsz, created_at) VALUES (1, 'openvino', 320, ?)",
                [now],
            )
    assert "m021_openvino_exports" in migrate(db, path)
    row = next(db.query("SELECT * FROM model_exports WHERE id = 7"))
    assert (row["format"], row["precision"], row["path"], row["metadata"]) == (
        "engine", "int8", "model_320_int8.engine", '{"x": 1}'
    )  # fmt: skip
    db.execute(
        "INSERT INTO model_exports (model_id, format, imgsz, created_at) VALUES (1, 'openvino', 320, ?)",
        [now],
    )
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO model_exports (model_id, format, imgsz, created_at) VALUES (1, 'pt', 320, ?)", [now]
        )
    assert "model_exports_model" in {i.name for i in db["model_exports"].indexes}
    assert db.execute("SELECT engine FROM models WHERE id = 1").fetchone() == (None,)  # m020: no pin
    db.conn.close()
