"""A real tiny training through `appliance worker` ends with an evaluation of its model on the run's frozen
val split, whose figures equal Ultralytics' own `val` on the same images and weights; the ONNX export of the
model, evaluated on the same split, too.

Ultralytics' `val` is run the way it runs every exported model, on square letterboxed inputs (rect=False):
that is the input the box's cameras give the model. (`YOLO("best.pt").val()` pads each batch to a
rectangle by default, which feeds the network other pixels at the border; the metrics code is the same.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import API
from tests.training_support import RUN_TIMEOUT, TERMINAL, Env
from tests.workers import WorkerProcess, wait_for

POINT = 0.005  # half a point of mAP


def completed_evaluation(env: Env, worker: WorkerProcess, evaluation_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = env.client.get(f"{API}/evaluations/{evaluation_id}", headers=env.admin).json()
        return found if found["status"] in TERMINAL else None

    found = wait_for(
        done, RUN_TIMEOUT, f"evaluation {evaluation_id}", interval=0.5, on_timeout=worker.log_text()[-3000:]
    )
    assert found["status"] == "completed", found["error"]
    return found


def ultralytics_val(model: Path, data_yaml: Path, config_dir: Path) -> Any:
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(config_dir)
    from ultralytics import YOLO

    return (
        YOLO(str(model))
        .val(data=str(data_yaml), imgsz=64, batch=1, rect=False, plots=False, device="cpu", verbose=False)
        .box
    )


def assert_same_figures(summary: dict[str, Any], theirs: Any) -> None:
    assert abs(summary["map50"] - theirs.map50) <= POINT, (summary["map50"], theirs.map50)
    assert abs(summary["map50_95"] - theirs.map) <= POINT, (summary["map50_95"], theirs.map)
    assert abs(summary["precision"] - theirs.mp) <= POINT, (summary["precision"], theirs.mp)
    assert abs(summary["recall"] - theirs.mr) <= POINT, (summary["recall"], theirs.mr)
    ours = {c["class_id"]: c for c in summary["classes"]}
    for k, class_id in enumerate(theirs.ap_class_index):
        assert abs(ours[int(class_id)]["map50"] - theirs.ap50[k]) <= POINT
        assert abs(ours[int(class_id)]["map50_95"] - theirs.ap[k]) <= POINT


@pytest.mark.slow
def test_training_ends_with_an_evaluation_equal_to_ultralytics_val(tmp_path: Path) -> None:
    env = Env(tmp_path, images=64)
    worker = WorkerProcess(env.data).start()
    try:
        # Enough epochs for a model that finds shapes (mAP50 ~0.6 here), so the comparison means something.
        job = env.start_job(epochs=60, plots=False)
        trained = env.wait_status(job["id"], TERMINAL, worker)
        assert trained["status"] == "completed", (trained["error"], trained["log_tail"])
        model_id = trained["model_id"]
        listed = wait_for(
            lambda: env.client.get(f"{API}/models/{model_id}/evaluations", headers=env.admin).json(),
            60,
            "the evaluation the training queued",
        )
        evaluation = completed_evaluation(env, worker, listed[0]["id"])
        export = env.client.post(
            f"{API}/models/{model_id}/exports", json={"format": "onnx"}, headers=env.admin
        )
        assert export.status_code in (200, 201), export.text
        wait_for(
            lambda: env.client.get(f"{API}/models/{model_id}", headers=env.admin).json()["ready"],
            RUN_TIMEOUT,
            "the ONNX export",
            on_timeout=worker.log_text()[-3000:],
        )
        on_export = env.client.post(
            f"{API}/models/{model_id}/evaluations",
            json={"split_id": evaluation["split"]["id"], "export_id": export.json()["id"]},
            headers=env.admin,
        )
        assert on_export.status_code == 201, on_export.text
        exported = completed_evaluation(env, worker, on_export.json()["id"])
        compared = env.client.get(
            f"{API}/evaluations/compare?a={evaluation['id']}&b={exported['id']}", headers=env.admin
        ).json()
    finally:
        worker.stop()
        env.close()

    split = evaluation["split"]
    run = env.run_dir(job["id"])
    assert split["kind"] == "training" and split["training_job_id"] == job["id"]
    assert split["images"] == len(list((run / "images" / "val").iterdir())) >= 8
    assert evaluation["source"] == "weights" and evaluation["trained_on"] == 0
    summary = evaluation["summary"]
    assert summary["images_evaluated"] == split["images"] and summary["labels"] == split["boxes"]
    assert summary["map50"] > 0.2, "the tiny model should find shapes; the comparison would mean little"

    theirs = ultralytics_val(
        env.data / "models" / str(model_id) / "best.pt", run / "data.yaml", tmp_path / "yolo"
    )
    assert_same_figures(summary, theirs)
    onnx = env.data / "models" / str(model_id) / "model_64.onnx"
    assert_same_figures(exported["summary"], ultralytics_val(onnx, run / "data.yaml", tmp_path / "yolo"))

    # The confusion matrix counts every label once in its class's column and every confident prediction once in
    # its class's row, the background row and column holding misses and false positives.
    matrix = summary["confusion_matrix"]
    n = len(matrix) - 1
    per_class = {c["class_id"]: c["labels"] for c in summary["classes"]}
    assert [sum(row[c] for row in matrix) for c in range(n)] == [per_class.get(c, 0) for c in range(n)]
    assert sum(sum(row) for row in matrix[:n]) == summary["predictions"]
    # The weights and their ONNX export see the same pixels: they disagree on (almost) no image.
    assert compared["images"] == split["images"] and compared["disagreements"] <= 1
