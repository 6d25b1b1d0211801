"""Signed model bundles between boxes: minisign's format (checked by Debian's minisign), the box key, and every
refusal (unsigned, untrusted, one byte altered anywhere, engines inside, downgrade, classes the cameras' rules
need), each with its reason and nothing half-imported."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import AppError
from appliance.fleet import bundles, keys
from appliance.fleet.schemas import BundleCreate
from appliance.models.loading import load_detector_for_model
from appliance.models.registry import model_row
from tests.camera_sources import scene
from tests.fleet_support import MINISIGN, Box, flip_byte, member_offsets, need_minisign, rewrite_bundle
from tests.helpers import API, create_user, run_cli


@pytest.fixture
def boxes(tmp_path: Path):
    a, b = Box(tmp_path / "a", "line-a"), Box(tmp_path / "b", "line-b")
    yield a, b
    a.close()
    b.close()


def make_bundle(box: Box, model_id: int, name: str = "colour", version: int | None = None) -> Path:
    bundles.export_bundle(box.db, box.config, model_id, None, BundleCreate(name=name, version=version))
    return box.config.data_path / "models" / str(model_id) / bundles.BUNDLE_FILE


def test_the_box_key_is_made_once_with_mode_0600_and_minisign_signs_with_it(boxes, tmp_path):
    need_minisign()
    a, _ = boxes
    first = keys.box_key(a.config)
    path = a.config.data_path / "fleet" / keys.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert keys.box_key(a.config).public == first.public  # read back, not made again
    # The file is minisign's own (unencrypted) secret key: the stock tool signs with it and verifies with the .pub.
    message = tmp_path / "note.txt"
    message.write_text("signed by the box key\n")
    pub = a.config.data_path / "fleet" / keys.PUBLIC_FILE
    signed = subprocess.run(
        [MINISIGN, "-S", "-s", str(path), "-m", str(message)], capture_output=True, text=True
    )
    assert signed.returncode == 0, signed.stderr
    checked = subprocess.run([MINISIGN, "-Vm", str(message), "-p", str(pub)], capture_output=True, text=True)
    assert checked.returncode == 0 and "verified" in checked.stdout, checked.stdout + checked.stderr


def test_debian_minisign_verifies_a_bundles_manifest_and_the_manifest_covers_every_file(boxes, tmp_path):
    need_minisign()
    a, _ = boxes
    bundle = make_bundle(a, a.colour_model())
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert names == ["manifest.json", "manifest.json.minisig", "metadata.json", "model_64.onnx"]
    unpacked = tmp_path / "unpacked"
    pub = a.config.data_path / "fleet" / keys.PUBLIC_FILE
    checked = subprocess.run(
        [MINISIGN, "-Vm", str(unpacked / "manifest.json"), "-p", str(pub)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Signature and comment signature verified" in checked.stdout
    assert "bundle colour v1 from line-a" in checked.stdout  # the trusted comment
    manifest = json.loads((unpacked / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (unpacked / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    metadata = json.loads((unpacked / "metadata.json").read_text())
    assert metadata["classes"] == [{"name": "square", "color": ""}, {"name": "disc", "color": ""}]
    assert metadata["imgsz"] == 64 and metadata["source_box"] == "line-a" and metadata["version"] == 1
    assert metadata["weights"] is None and "evaluation" in metadata
    # A file altered after signing: minisign itself refuses the manifest.
    text = (unpacked / "manifest.json").read_text()
    assert '"version": 1' in text
    (unpacked / "manifest.json").write_text(text.replace('"version": 1', '"version": 9'))
    altered = subprocess.run(
        [MINISIGN, "-Vm", str(unpacked / "manifest.json"), "-p", str(pub)], capture_output=True
    )
    assert altered.returncode != 0


def test_a_bundle_travels_to_another_box_and_serves_the_same_answers(boxes):
    a, b = boxes
    source_id = a.colour_model()
    bundle = make_bundle(a, source_id)
    b.trust(a)
    b.colour_model("old", deploy=True)
    before = b.counts()
    imported = bundles.import_bundle_file(b.db, b.config, bundle, b.admin, deploy=True)
    assert not imported.already_imported and imported.deployed
    assert (imported.name, imported.version, imported.source_box) == ("colour", 1, "line-a")
    assert b.counts()["models"] == before["models"] + 1 and b.counts()["staging_files"] == 0
    row = model_row(b.db, imported.model_id)
    assert row["deployed"] == 1 and json.loads(row["classes"]) == ["square", "disc"]
    frame = scene([(1, 1)], [(5, 5)])
    here = load_detector_for_model(b.config, row).detect(frame).detections
    there = load_detector_for_model(a.config, model_row(a.db, source_id)).detect(frame).detections

    def answers(detections):
        return sorted((d.class_name, round(d.x1), round(d.y1), round(d.x2), round(d.y2)) for d in detections)

    assert answers(here) == answers(there) and {d.class_name for d in here} == {"square", "disc"}
    assert np.allclose(sorted(d.confidence for d in here), sorted(d.confidence for d in there))
    # The same bundle again changes nothing.
    again = bundles.import_bundle_file(b.db, b.config, bundle, b.admin)
    assert again.already_imported and again.model_id == imported.model_id
    assert b.counts()["models"] == before["models"] + 1


def refused(box: Box, bundle: Path, *, deploy: bool = False) -> str:
    before = box.counts()
    with pytest.raises(AppError) as caught:
        bundles.import_bundle_file(box.db, box.config, bundle, box.admin, deploy=deploy)
    after = box.counts()
    assert after == {**before, "staging_files": 0}, "a refused bundle left something behind"
    return caught.value.detail


def test_unsigned_untrusted_and_engine_carrying_bundles_are_refused_with_the_reason(boxes, tmp_path):
    a, b = boxes
    bundle = make_bundle(a, a.colour_model())
    assert "does not trust" in refused(b, bundle)
    b.trust(a)
    unsigned = rewrite_bundle(bundle, tmp_path / "unsigned.bundle", {"manifest.json.minisig": None})
    assert refused(b, unsigned).startswith("unsigned bundle")
    engine = rewrite_bundle(bundle, tmp_path / "engine.bundle", {"model_64_fp16.engine": b"\0" * 100})
    assert "engines are never shipped" in refused(b, engine)
    extra = rewrite_bundle(bundle, tmp_path / "extra.bundle", {"notes.txt": b"hi"})
    assert "unexpected entry" in refused(b, extra)
    gzipped = tmp_path / "gz.bundle"
    with tarfile.open(gzipped, "w:gz") as tar:
        tar.add(bundle, arcname="x")
    assert "not a model bundle" in refused(b, gzipped)


def test_one_byte_altered_anywhere_is_refused(boxes, tmp_path):
    a, b = boxes
    bundle = make_bundle(a, a.colour_model())
    b.trust(a)
    offsets = member_offsets(bundle)
    size = bundle.stat().st_size
    places = {
        "onnx data": offsets["model_64.onnx"][1] + 200,
        "metadata": offsets["metadata.json"][1] + 10,
        "manifest": offsets["manifest.json"][1] + 30,
        "signature": offsets["manifest.json.minisig"][1] + 60,
        "a header's name field": offsets["metadata.json"][0] + 2,
        "a header's mtime": offsets["model_64.onnx"][0] + 140,
        "the padding before the onnx header": offsets["model_64.onnx"][0] - 1,
        "the end blocks": size - 100,
    }
    for where, offset in places.items():
        altered = flip_byte(bundle, tmp_path / f"altered-{offset}.bundle", offset)
        reason = refused(b, altered)
        assert any(word in reason for word in ("altered", "damaged", "incomplete", "not a model bundle")), (
            where,
            reason,
        )
    assert bundles.import_bundle_file(b.db, b.config, bundle, b.admin).model_id  # the untouched one goes in


def test_a_downgrade_and_a_reused_version_are_refused(boxes):
    a, b = boxes
    b.trust(a)
    v1 = make_bundle(a, a.colour_model("v1"), version=1)
    v2 = make_bundle(a, a.colour_model("v2"), version=2)
    bundles.import_bundle_file(b.db, b.config, v2, b.admin)
    reason = refused(b, v1)
    assert reason.startswith("downgrade refused") and "v2" in reason and "v1" in reason
    # Another box's colour v2 (different bytes) can never be taken for the one here.
    c = Box(a.root.parent / "c", "line-c")
    try:
        b.trust(c)
        other_v2 = make_bundle(c, c.colour_model("other"), version=2)
        assert "versions are never reused" in refused(b, other_v2)
    finally:
        c.close()


def test_classes_that_do_not_cover_the_cameras_rules_are_refused_for_deploy(boxes, tmp_path):
    a, b = boxes
    b.trust(a)
    bundle = make_bundle(a, a.colour_model())
    settings = {
        "source": "/dev/null",
        "rules": [{"name": "no bolts", "classes": ["bolt"], "condition": "absent"}],
    }
    b.db.execute(
        "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('press 2', 0, ?, '', '')",
        [json.dumps(settings)],
    )
    reason = refused(b, bundle, deploy=True)
    assert (
        "'press 2'" in reason and "'no bolts'" in reason and "'bolt'" in reason and "square, disc" in reason
    )
    # Into the catalog only, it is fine (nothing would run it).
    assert not bundles.import_bundle_file(b.db, b.config, bundle, b.admin).deployed


def test_a_model_with_weights_carries_them(tiny_yolo, tiny_onnx, boxes):
    a, b = boxes
    from tests.camera_sources import deploy_model

    bundle = make_bundle(a, deploy_model(a.config, a.db, tiny_onnx, tiny_yolo, name="tiny"), name="tiny")
    b.trust(a)
    imported = bundles.import_bundle_file(b.db, b.config, bundle, b.admin)
    folder = b.config.data_path / "models" / str(imported.model_id)
    assert (folder / "best.pt").read_bytes() == tiny_yolo.read_bytes()
    assert json.loads((folder / bundles.BUNDLE_METADATA).read_text())["weights"] == "best.pt"


def test_a_bundle_carries_the_models_evaluation(client, admin, config, tmp_path):
    """A real evaluation on a frozen split (the evaluate job, run here as the worker runs it) goes into the bundle."""
    import cv2

    from appliance.db import open_database
    from tests.camera_sources import build_colour_onnx, scene
    from tests.helpers import create_dataset, upload
    from tests.test_evaluation import add_model, cell, run_jobs

    dataset = create_dataset(client, admin, "line", ["square", "disc"], is_public=True)
    ok, png = cv2.imencode(".png", scene([(1, 1)], [(5, 5)]))
    image = upload(client, admin, dataset["id"], [("a.png", png.tobytes())])["added"][0]
    boxes = [
        dict(zip(("x1", "y1", "x2", "y2"), cell(c, r), strict=True), class_id=k)
        for k, (c, r) in ((0, (1, 1)), (1, (5, 5)))
    ]
    body = {"version": image["version"], "boxes": boxes, "status": "labeled"}
    assert client.put(f"{API}/images/{image['id']}/annotations", json=body, headers=admin).status_code == 200
    db = open_database(config.db_path)
    try:
        model_id, export_id = add_model(
            config, db, build_colour_onnx(tmp_path / "c" / "model_64.onnx"), "colour"
        )
        queued = client.post(
            f"{API}/models/{model_id}/evaluations",
            json={"dataset_id": dataset["id"], "export_id": export_id},
            headers=admin,
        )
        assert queued.status_code == 201, queued.text
        assert run_jobs(config) == ["completed"]
        made = client.post(f"{API}/fleet/models/{model_id}/bundle", headers=admin)
        assert made.status_code == 200, made.text
        with tarfile.open(config.data_path / "models" / str(model_id) / bundles.BUNDLE_FILE) as tar:
            metadata = json.loads(tar.extractfile("metadata.json").read())  # type: ignore[union-attr]
        evaluation = metadata["evaluation"]
        assert evaluation["id"] == queued.json()["id"] and evaluation["status"] == "completed"
        assert evaluation["summary"]["map50"] > 0.9 and evaluation["split"]["images"] == 1
    finally:
        db.conn.close()


def test_the_api_makes_downloads_and_takes_bundles_admins_only(client, admin, tmp_path, config):
    from appliance.db import open_database

    db = open_database(config.db_path)
    box = Box.__new__(Box)
    box.root, box.config, box.db, box.box_id = tmp_path, config, db, "api-box"
    model_id = box.colour_model()
    labeler = create_user(client, admin, "lab", "labeler")
    assert client.post(f"{API}/fleet/models/{model_id}/bundle", headers=labeler).status_code == 403
    assert (
        client.get(f"{API}/fleet/models/{model_id}/bundle", headers=admin).status_code == 404
    )  # not made yet
    made = client.post(
        f"{API}/fleet/models/{model_id}/bundle", json={"name": "parts", "version": 3}, headers=admin
    )
    assert made.status_code == 200, made.text
    assert (
        made.json()["name"] == "parts" and made.json()["version"] == 3 and made.json()["origin"] == "exported"
    )
    download = client.get(f"{API}/fleet/models/{model_id}/bundle", headers=admin)
    assert (
        download.status_code == 200
        and 'filename="parts-v3.bundle"' in download.headers["content-disposition"]
    )
    keys_listed = client.get(f"{API}/fleet/keys", headers=labeler).json()
    assert keys_listed[0]["own"] and len(keys_listed[0]["key_id"]) == 16
    # Another box's bundle: untrusted first (422 with the reason), then trusted by the admin.
    other = Box(tmp_path / "other", "line-o")
    try:
        other_bundle = make_bundle(other, other.colour_model("o"), name="other")
        body = other_bundle.read_bytes()
        headers = {**admin, "Content-Type": "application/octet-stream"}
        answer = client.post(f"{API}/fleet/bundles", content=body, headers=headers)
        assert answer.status_code == 422 and "does not trust" in answer.json()["detail"]
        assert (
            client.post(f"{API}/fleet/bundles", content=body, headers={**headers, **labeler}).status_code
            == 403
        )
        pub = keys.box_key(other.config).public
        trust = {"public_key": pub.text(), "name": "line-o", "key_id": "0" * 16}
        assert (
            client.post(f"{API}/fleet/keys", json=trust, headers=admin).status_code == 422
        )  # wrong id given
        trust["key_id"] = pub.id
        assert client.post(f"{API}/fleet/keys", json=trust, headers=labeler).status_code == 403
        assert client.post(f"{API}/fleet/keys", json=trust, headers=admin).status_code == 201
        answer = client.post(f"{API}/fleet/bundles?deploy=true", content=body, headers=headers)
        assert answer.status_code == 201, answer.text
        assert answer.json()["deployed"] and answer.json()["name"] == "other"
        models = client.get(f"{API}/models", headers=admin).json()
        assert any(m["name"] == "other v1" and m["deployed"] and m["ready"] for m in models)
        assert client.delete(f"{API}/fleet/keys/{pub.id}", headers=admin).status_code == 204
    finally:
        other.close()
        db.conn.close()


def test_the_cli_carries_a_bundle_on_a_usb_stick(tmp_path):
    a, b = Box(tmp_path / "a", "line-a"), Box(tmp_path / "b", "line-b")
    model_id = a.colour_model()
    a.close()
    b.close()
    stick = tmp_path / "stick"
    stick.mkdir()
    env_a = {"APPLIANCE_BOX_ID": "line-a"}
    written = run_cli(
        "bundle", "export", str(model_id), "-o", str(stick), data_dir=a.root / "data", env=env_a
    )
    assert written.returncode == 0, written.stderr
    path = Path(json.loads(written.stdout)["written"])
    assert path.parent == stick and path.name == "colour-v1.bundle"
    refused_cli = run_cli("bundle", "import", str(path), data_dir=b.root / "data")
    assert refused_cli.returncode == 1 and "does not trust" in refused_cli.stderr
    key = run_cli("bundle", "key", data_dir=a.root / "data", env=env_a)
    (tmp_path / "a.pub").write_text(key.stdout)
    assert (
        run_cli(
            "bundle", "trust", str(tmp_path / "a.pub"), "--name", "line-a", data_dir=b.root / "data"
        ).returncode
        == 0
    )
    done = run_cli("bundle", "import", str(path), data_dir=b.root / "data")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source_box"] == "line-a"
    staging = b.root / "data" / "staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]
