"""Rules name classes of the camera's model (issue 23, item 1): a misspelt class is refused on save with the
model's classes, and deploying a model whose classes do not cover the rules of the cameras that follow the
deployed model is refused (409, the rules named) unless deployed anyway; the deploy check says beforehand
what a deploy would do (not exported, not usable, rules it breaks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from appliance.config import Config
from appliance.db import Database, write_transaction
from tests.helpers import API
from tests.inference_support import insert_model
from tests.test_model_visibility import add_onnx_export

SHAPES = ["circle", "square"]


def model(
    db: Database, config: Config, tmp: Path, classes: list[str], map50: float = 0.6, export: bool = True
) -> int:
    weights = tmp / "best.pt"
    weights.write_bytes(b"weights nobody loads here")
    model_id = insert_model(db, config, weights, name="shapes", metrics={"map50": map50, "epochs_done": 3})
    with write_transaction(db):
        db.execute("UPDATE models SET classes = ? WHERE id = ?", [json.dumps(classes), model_id])
    if export:
        add_onnx_export(db, config, model_id)
    return model_id


def camera(name: str, classes: list[str], model_id: int | None = None) -> dict[str, Any]:
    rule = {"name": "one circle", "classes": classes, "condition": "present"}
    settings = {"source_type": "file", "source": "/media/usb/line.avi", "rules": [rule], "model_id": model_id}
    return {"name": name, "settings": settings}


def test_a_misspelt_class_is_refused_on_save_with_the_models_classes(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database, config: Config, tmp_path: Path
) -> None:
    # No model yet: nothing to compare with, the rule is kept as written.
    early = client.post(f"{API}/cameras", json=camera("early", ["circel"]), headers=admin)
    assert early.status_code == 201, early.text
    shapes = model(fresh_db, config, tmp_path, SHAPES)
    assert (
        client.post(f"{API}/models/{shapes}/deploy", json={"deploy_anyway": True}, headers=admin).status_code
        == 200
    )

    refused = client.post(f"{API}/cameras", json=camera("press 1", ["circel"]), headers=admin)
    assert refused.status_code == 422
    assert refused.json() == {
        "status_code": 422,
        "detail": f"settings.rules[0].classes: 'circel' is not a class of model {shapes} (shapes); its classes are:"
        " circle, square",
    }
    assert [c["name"] for c in client.get(f"{API}/cameras", headers=admin).json()] == ["early"]
    # Case does not matter (the rule engine compares without it); the right class is saved.
    created = client.post(f"{API}/cameras", json=camera("press 1", ["Circle"]), headers=admin)
    assert created.status_code == 201, created.text
    # Replacing the early camera's settings checks them too, and nothing is half-written.
    put = client.put(
        f"{API}/cameras/{early.json()['id']}", json=camera("early", ["circel", "sqare"]), headers=admin
    )
    assert put.status_code == 422 and "'circel', 'sqare' are not classes" in put.json()["detail"]
    stored = client.get(f"{API}/cameras/{early.json()['id']}", headers=admin).json()
    assert stored["settings"]["rules"][0]["classes"] == ["circel"]
    # A camera pinned to a model is checked against that model, not the deployed one.
    other = model(fresh_db, config, tmp_path, ["bolt"])
    pinned = client.post(f"{API}/cameras", json=camera("press 2", ["circle"], model_id=other), headers=admin)
    assert (
        pinned.status_code == 422
        and f"model {other} (shapes); its classes are: bolt" in pinned.json()["detail"]
    )
    assert (
        client.post(
            f"{API}/cameras", json=camera("press 2", ["BOLT"], model_id=other), headers=admin
        ).status_code
        == 201
    )


def test_deploying_a_model_that_breaks_rules_is_refused_unless_deployed_anyway(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database, config: Config, tmp_path: Path
) -> None:
    shapes = model(fresh_db, config, tmp_path, SHAPES)
    assert client.post(f"{API}/models/{shapes}/deploy", headers=admin).status_code == 200
    press = client.post(f"{API}/cameras", json=camera("press 1", ["circle"]), headers=admin).json()
    bolts = model(fresh_db, config, tmp_path, ["bolt", "nut"], map50=0.001)
    # A camera pinned to its own model is not affected by the deploy.
    client.post(f"{API}/cameras", json=camera("pinned", ["circle"], model_id=shapes), headers=admin)

    check = client.get(f"{API}/models/{bolts}/deploy-check", headers=admin)
    assert check.status_code == 200
    assert check.json()["broken_rules"] == [
        {"camera_id": press["id"], "camera_name": "press 1", "rule": "one circle", "missing": ["circle"]}
    ]
    assert check.json()["classes"] == ["bolt", "nut"] and check.json()["ready"] is True
    assert check.json()["unusable_reason"].startswith("mAP50 0.001 on its validation images after 3 epochs")

    refused = client.post(f"{API}/models/{bolts}/deploy", headers=admin)
    assert refused.status_code == 409
    assert set(refused.json()) == {"status_code", "detail"}
    assert "camera 'press 1' rule 'one circle' ('circle')" in refused.json()["detail"]
    assert "its classes are: bolt, nut" in refused.json()["detail"]
    assert client.get(f"{API}/models/{shapes}", headers=admin).json()["deployed"] is True  # nothing changed
    unknown = client.post(f"{API}/models/{bolts}/deploy", json={"anyway": True}, headers=admin)
    assert unknown.status_code == 400  # a misspelt flag is not a silent "no"
    anyway = client.post(f"{API}/models/{bolts}/deploy", json={"deploy_anyway": True}, headers=admin)
    assert anyway.status_code == 200 and anyway.json()["deployed"] is True

    # Back to a model that covers the rules: no question asked.
    good = client.get(f"{API}/models/{shapes}/deploy-check", headers=admin).json()
    assert good["broken_rules"] == [] and good["unusable_reason"] is None
    assert client.post(f"{API}/models/{shapes}/deploy", headers=admin).status_code == 200


def test_the_deploy_check_says_when_a_model_has_no_export(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database, config: Config, tmp_path: Path
) -> None:
    bare = model(fresh_db, config, tmp_path, SHAPES, export=False)
    check = client.get(f"{API}/models/{bare}/deploy-check", headers=admin).json()
    assert check["ready"] is False and "export it to ONNX" in check["not_ready_reason"]
    assert client.get(f"{API}/models/999/deploy-check", headers=admin).status_code == 404
