"""Dataset imports from USB folders and uploaded archives: formats, class mapping, duplicates, reports, CLI, worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import httpx

from appliance.db import open_database
from appliance.transfers import importer
from tests import transfers_support
from tests.helpers import (
    API,
    LOCAL_URL,
    REPO,
    ServerProcess,
    create_dataset,
    image_bytes,
    run_cli,
    setup_admin,
)
from tests.models import CLASSES, synthetic_image, write_yolo_dataset
from tests.transfers_support import (
    boxes_by_hash,
    import_config,
    import_folder,
    run_jobs,
    upload_archive,
    zip_folder,
)
from tests.workers import WorkerProcess

config = transfers_support.config  # fixtures: a config with an import root (overrides conftest's), that root
media = transfers_support.media


def expected_boxes(count: int, size: int = 96):
    """{seed: sorted boxes} the synthetic YOLO set holds, in pixels."""
    return {
        seed: sorted((CLASSES[c], x1, y1, x2, y2) for c, x1, y1, x2, y2 in synthetic_image(seed, size)[1])
        for seed in range(count)
    }


def test_yolo_folder_import_maps_classes_and_reimport_adds_nothing(client, admin, config, media):
    write_yolo_dataset(media / "stick", count=12)
    dataset = create_dataset(client, admin, classes=["disc"])
    job = import_folder(client, admin, config, dataset["id"], media / "stick")
    assert job["status"] == "completed", job
    report = job["result"]
    assert report["format"] == "yolo"
    assert report["imported"] == 12 and report["duplicates"] == 0 and report["skipped"] == 0
    assert report["classes_added"] == ["square"]  # "disc" already existed, matched by name
    classes = [
        c["name"] for c in client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["classes"]
    ]
    assert classes == ["disc", "square"]
    stored = boxes_by_hash(config, dataset["id"])
    expected = expected_boxes(12)
    assert sorted(len(v) for v in stored.values()) == sorted(len(v) for v in expected.values())
    total = sum(len(v) for v in expected.values())
    assert report["boxes"] == total
    for boxes in stored.values():  # one of the synthetic images, box for box (6 decimals in the txt)
        assert any(
            len(boxes) == len(want)
            and all(
                b[0] == w[0] and all(abs(p - q) < 0.01 for p, q in zip(b[1:], w[1:], strict=True))
                for b, w in zip(boxes, want, strict=True)
            )
            for want in expected.values()
        )
    stats = client.get(f"{API}/datasets/{dataset['id']}/stats", headers=admin).json()
    assert stats["by_status"]["labeled"] == 12 and stats["boxes"] == total

    again = import_folder(client, admin, config, dataset["id"], media / "stick")
    assert again["result"]["imported"] == 0 and again["result"]["duplicates"] == 12
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["image_count"] == 12
    listed = client.get(f"{API}/imports", params={"dataset_id": dataset["id"]}, headers=admin).json()
    assert [j["id"] for j in listed] == [again["id"], job["id"]]


def test_unknown_classes_skip_keeps_the_dataset_classes(client, admin, config, media):
    write_yolo_dataset(media / "stick", count=8)
    dataset = create_dataset(client, admin, classes=["square"])
    job = import_folder(client, admin, config, dataset["id"], media / "stick", unknown_classes="skip")
    report = job["result"]
    assert report["classes_added"] == []
    expected = expected_boxes(8)
    discs = sum(1 for v in expected.values() for b in v if b[0] == "disc")
    assert report["boxes_skipped"] == discs > 0
    assert any("class 'disc' is not in the dataset" in s["reason"] for s in report["skipped_items"])
    assert all(b[0] == "square" for v in boxes_by_hash(config, dataset["id"]).values() for b in v)


def test_plain_images_and_bad_files_are_reported(client, admin, config, media):
    folder = media / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image_bytes(seed=1))
    (folder / "sub" / "b.png").write_bytes(image_bytes(fmt=".png", seed=2))
    (folder / "copy.jpg").write_bytes(image_bytes(seed=1))
    (folder / "fake.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("hello")
    (folder / "camera.json").write_text('{"categories": "a JSON that only looks like COCO"}')
    dataset = create_dataset(client, admin)
    job = import_folder(client, admin, config, dataset["id"], folder, format="auto")
    report = job["result"]
    assert report["format"] == "plain"
    assert report["imported"] == 2 and report["duplicates"] == 1 and report["skipped"] == 2
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert set(reasons) == {"fake.jpg", "camera.json"}
    assert "not an image" in reasons["fake.jpg"]
    assert "no boxes in this COCO file" in reasons["camera.json"]  # why the JSON was left out is kept
    stats = client.get(f"{API}/datasets/{dataset['id']}/stats", headers=admin).json()
    assert stats["by_status"]["unlabeled"] == 2


def test_coco_and_voc_folders_are_detected(client, admin, config, media):
    coco = media / "coco"
    (coco / "images").mkdir(parents=True)
    voc = media / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    images, annotations = [], []
    for seed in range(3):
        image, boxes = synthetic_image(seed)
        cv2.imwrite(str(coco / "images" / f"{seed}.jpg"), image)
        cv2.imwrite(str(voc / "JPEGImages" / f"{seed}.jpg"), image)
        images.append({"id": seed + 10, "file_name": f"{seed}.jpg", "width": 96, "height": 96})
        objects = ""
        for n, (c, x1, y1, x2, y2) in enumerate(boxes):
            annotations.append(
                {
                    "id": seed * 10 + n,
                    "image_id": seed + 10,
                    "category_id": c + 7,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                }
            )
            objects += f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        (voc / "Annotations" / f"{seed}.xml").write_text(
            f"<annotation><filename>{seed}.jpg</filename>{objects}</annotation>"
        )
    categories = [{"id": i + 7, "name": n} for i, n in enumerate(CLASSES)]
    (coco / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    expected = sorted(expected_boxes(3).values())
    for folder, fmt in ((coco, "coco"), (voc, "voc")):
        dataset = create_dataset(client, admin, name=f"from-{fmt}", classes=[])
        job = import_folder(client, admin, config, dataset["id"], folder)
        assert job["result"]["format"] == fmt and job["result"]["imported"] == 3, job
        assert sorted(boxes_by_hash(config, dataset["id"]).values()) == expected


def test_sources_paths_and_roots(client, admin, config, media, tmp_path):
    write_yolo_dataset(media / "usb0", count=3)
    (media / "usb0" / "more.zip").write_bytes(zip_folder(media / "usb0"))
    (tmp_path / "secret").mkdir()
    (media / "escape").symlink_to(tmp_path / "secret")
    sources = client.get(f"{API}/imports/sources", headers=admin).json()
    usb = next(s for s in sources if s["name"] == "usb0")
    assert usb["image_count"] == 3 and usb["count_complete"] and usb["free_mb"] > 0
    assert usb["archives"] == ["more.zip"]
    assert all(s["name"] != "escape" for s in sources)  # links are not followed while listing
    dataset = create_dataset(client, admin)
    for path, status in (
        (str(tmp_path / "secret"), 403),
        (str(media / "escape"), 403),  # a link under the root resolving outside it
        (str(media / "usb0" / ".." / ".." / "secret"), 403),
        ("usb0", 400),  # not absolute: the document says a path starts with / (or ~)
        (str(media / "missing"), 404),
    ):
        response = client.post(f"{API}/datasets/{dataset['id']}/imports", json={"path": path}, headers=admin)
        assert response.status_code == status, (path, response.text)
        assert set(response.json()) == {"status_code", "detail"}
    # An archive file on the stick is extracted into staging like an upload.
    job = import_folder(client, admin, config, dataset["id"], media / "usb0" / "more.zip")
    assert job["result"]["imported"] == 3
    assert not any((config.data_path / "staging").glob("job-*"))


def test_archive_upload_streams_into_staging(client, admin, config, media):
    write_yolo_dataset(media / "set", count=6)
    dataset = create_dataset(client, admin, classes=[])
    crashed = config.data_path / "staging" / "uploads" / "crashed.part"  # an upload cut off long ago
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(b"PK")
    os.utime(crashed, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    response = upload_archive(client, admin, dataset["id"], zip_folder(media / "set"), filename="set.zip")
    assert response.status_code == 202, response.text
    uploads = list((config.data_path / "staging" / "uploads").iterdir())
    assert [p.suffix for p in uploads] == [
        ".upload"
    ]  # waiting in staging for the worker; the stale part swept
    run_jobs(config)
    job = client.get(f"{API}/imports/{response.json()['id']}", headers=admin).json()
    assert job["status"] == "completed" and job["result"]["imported"] == 6
    assert job["params"] == {
        "source": "archive",
        "filename": "set.zip",
        "format": "auto",
        "unknown_classes": "add",
    }
    assert list((config.data_path / "staging" / "uploads").iterdir()) == []
    refused = upload_archive(client, admin, dataset["id"], b"plain text, not an archive")
    assert refused.status_code == 415
    assert list((config.data_path / "staging" / "uploads").iterdir()) == []
    empty = upload_archive(client, admin, dataset["id"], b"")
    assert empty.status_code == 400


def test_archive_upload_size_cap(tmp_path):
    from litestar.testing import TestClient

    from appliance.server import create_app

    config = import_config(tmp_path, max_import_mb=1)
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as client:
        headers = setup_admin(client)
        dataset = create_dataset(client, headers)
        body = b"PK\x03\x04" + b"\0" * (2 * 1024 * 1024)
        response = upload_archive(client, headers, dataset["id"], body)  # refused on Content-Length
        assert response.status_code == 413, response.text
        chunked = client.post(  # no Content-Length: refused while streaming, the partial file removed
            f"{API}/datasets/{dataset['id']}/imports/archive",
            content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
            headers={**headers, "Content-Type": "application/octet-stream"},
        )
        assert chunked.status_code == 413, chunked.text
        assert "import limit" in chunked.json()["detail"]
        assert list((config.data_path / "staging" / "uploads").iterdir()) == []


def test_partial_failure_keeps_committed_batches_and_resumes(client, admin, config, media, monkeypatch):
    write_yolo_dataset(media / "stick", count=12)
    dataset = create_dataset(client, admin, classes=[])
    monkeypatch.setattr(importer, "BATCH", 5)
    calls = {"n": 0}
    real_check = importer.check_free_space

    def disk_fills_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            from appliance.errors import InsufficientStorage

            raise InsufficientStorage("not enough disk space (test)")
        return real_check(*args, **kwargs)

    monkeypatch.setattr(importer, "check_free_space", disk_fills_on_third_batch)
    job = import_folder(client, admin, config, dataset["id"], media / "stick")
    assert job["status"] == "failed" and "not enough disk space" in job["error"]
    assert job["progress"]["imported"] == 10  # two whole batches, each its own transaction
    assert job["progress"]["skipped_items"] == []  # the failed job keeps its report
    db_boxes = boxes_by_hash(config, dataset["id"])
    assert len(db_boxes) == 10
    page = client.get(f"{API}/datasets/{dataset['id']}/images", params={"limit": 50}, headers=admin).json()
    assert all(item["box_count"] == len(db_boxes[item["sha256"]]) for item in page["items"])
    monkeypatch.setattr(importer, "check_free_space", real_check)
    again = import_folder(client, admin, config, dataset["id"], media / "stick")
    assert again["result"]["imported"] == 2 and again["result"]["duplicates"] == 10


def test_viewer_cannot_import_and_jobs_of_private_datasets_stay_private(
    client, admin, config, media, fresh_db
):
    from tests.helpers import create_user

    write_yolo_dataset(media / "stick", count=2)
    viewer = create_user(client, admin, "vera", "viewer")
    other = create_user(client, admin, "lars", "labeler")
    dataset = create_dataset(client, admin)
    response = client.post(
        f"{API}/datasets/{dataset['id']}/imports", json={"path": str(media / "stick")}, headers=viewer
    )
    assert response.status_code == 404  # private dataset of someone else: not even seen
    job = import_folder(client, admin, config, dataset["id"], media / "stick")
    assert client.get(f"{API}/imports/{job['id']}", headers=other).status_code == 404
    assert client.get(f"{API}/imports", headers=other).json() == []
    assert client.get(f"{API}/imports/sources", headers=viewer).status_code == 403
    # A user's own job is listed even behind hundreds of newer jobs they may not see.
    from appliance.jobs.service import create_job

    theirs = create_dataset(client, other, name="theirs")
    lars = client.get(f"{API}/auth/me", headers=other).json()["id"]
    params = {"source": "path", "path": "/x"}
    own = create_job(fresh_db, "import", params, user_id=lars, dataset_id=theirs["id"])
    for _ in range(600):
        create_job(fresh_db, "import", params, user_id=None, dataset_id=dataset["id"])
    listed = client.get(f"{API}/imports", headers=other).json()
    assert [j["id"] for j in listed] == [own]


def test_web_process_modules_do_not_import_torch():
    code = (
        "import sys, appliance.transfers.controllers, appliance.transfers.jobs, appliance.transfers.cli;"
        "bad = [m for m in ('torch', 'ultralytics') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_import(tmp_path):
    media = tmp_path / "media"
    write_yolo_dataset(media / "stick", count=4)

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args, data_dir=tmp_path / "data", stdin=stdin, env={"APPLIANCE_IMPORT_ROOTS": str(media)}
        )

    def summary(result: subprocess.CompletedProcess[str]) -> dict:
        return json.loads(result.stdout.strip().splitlines()[-1])

    created = cli("create-admin", "--username", "root", "--password-stdin", stdin="root-password-1\n")
    assert created.returncode == 0, created.stderr
    missing = cli("import", str(media / "stick"), "--dataset", "parts")
    assert missing.returncode == 1 and "--create" in missing.stderr
    result = cli("import", str(media / "stick"), "--dataset", "parts", "--create")
    assert result.returncode == 0, result.stderr
    done = summary(result)
    assert done["status"] == "completed" and done["imported"] == 4 and done["format"] == "yolo"
    assert summary(cli("import", str(media / "stick"), "--dataset", "parts"))["duplicates"] == 4
    (media / "broken.zip").write_bytes(b"PK\x03\x04 cut short")
    broken = cli("import", str(media / "broken.zip"), "--dataset", "parts")
    assert broken.returncode == 1, broken.stderr
    failed = summary(broken)  # a summary, not a traceback
    assert failed["status"] == "failed" and "damaged or truncated" in failed["error"], failed


def test_end_to_end_upload_with_a_real_worker(tmp_path):
    """A real server and a real `appliance worker`: stream an archive over HTTP, watch the job finish."""
    media = tmp_path / "media"
    write_yolo_dataset(media / "set", count=5)
    archive = zip_folder(media / "set")
    env = {"APPLIANCE_IMPORT_ROOTS": str(media), "APPLIANCE_WORKER_POLL_S": "0.2"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        worker = WorkerProcess(server.data_dir, env={"APPLIANCE_IMPORT_ROOTS": str(media)}).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                headers = setup_admin(http, server.data_dir / "appliance.db")
                dataset = create_dataset(http, headers, classes=[])

                def chunks():
                    for start in range(0, len(archive), 64 * 1024):
                        yield archive[start : start + 64 * 1024]

                response = http.post(
                    f"{API}/datasets/{dataset['id']}/imports/archive",
                    content=chunks(),
                    params={"format": "yolo"},
                    headers={**headers, "Content-Type": "application/octet-stream"},
                )
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    job = http.get(f"{API}/imports/{job_id}", headers=headers).json()
                    if job["status"] in ("completed", "failed", "cancelled"):
                        break
                    time.sleep(0.2)
                assert job["status"] == "completed", job
                assert job["result"]["imported"] == 5 and job["progress"]["processed"] == 5
        finally:
            worker.stop()


def test_cancel_stops_between_batches_with_a_partial_report(
    client, admin, config, media, fresh_db, monkeypatch
):
    from appliance.jobs import service as jobs
    from appliance.jobs.worker import load_job_kinds, run_one

    write_yolo_dataset(media / "stick", count=8)
    dataset = create_dataset(client, admin, classes=[])
    monkeypatch.setattr(importer, "BATCH", 3)
    response = client.post(
        f"{API}/datasets/{dataset['id']}/imports", json={"path": str(media / "stick")}, headers=admin
    )
    load_job_kinds()
    job = jobs.claim_next_job(fresh_db, ["import"])
    assert job is not None and job["id"] == response.json()["id"]
    cancel = client.post(f"{API}/imports/{job['id']}/cancel", headers=admin)
    assert cancel.status_code == 200, cancel.text
    assert run_one(job, fresh_db, config) == "cancelled"
    final = client.get(f"{API}/imports/{job['id']}", headers=admin).json()
    assert final["status"] == "cancelled" and final["result"]["imported"] == 3  # the first batch stays
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["image_count"] == 3


def test_an_import_keeps_every_kept_count_equal_to_a_recount(client, admin, config, media):
    """Imports apply the box stats per batch (the per-box triggers stand aside): the kept counts must equal
    what counting the rows again gives, also after labels land on stored unlabeled copies."""
    from tests.models import write_yolo_dataset

    write_yolo_dataset(media / "set", count=12)
    dataset = create_dataset(client, admin, name="recount", classes=[])
    plain = media / "plain"
    plain.mkdir()
    for image in sorted((media / "set" / "images").rglob("*.jpg"))[:4]:
        (plain / image.name).write_bytes(image.read_bytes())  # unlabeled copies first
    assert import_folder(client, admin, config, dataset["id"], plain)["result"]["imported"] == 4
    job = import_folder(client, admin, config, dataset["id"], media / "set")
    assert job["result"]["imported"] == 8 and job["result"]["labels_applied"] == 4, job["result"]
    db = open_database(config.db_path)
    try:
        d = dataset["id"]
        recount = {
            "status": dict(
                db.execute("SELECT status, COUNT(*) FROM images WHERE dataset_id = ? GROUP BY status", [d])
            ),
            "class": {
                row[0]: (row[1], row[2])
                for row in db.execute(
                    "SELECT class_id, COUNT(*), COUNT(DISTINCT image_id) FROM annotations WHERE dataset_id = ? "
                    "GROUP BY class_id",
                    [d],
                )
            },
            "class_status": {
                (row[0], row[1]): row[2]
                for row in db.execute(
                    "SELECT a.class_id, i.status, COUNT(DISTINCT a.image_id) FROM annotations a "
                    "JOIN images i ON i.id = a.image_id WHERE a.dataset_id = ? GROUP BY a.class_id, i.status",
                    [d],
                )
            },
            "size": dict(
                db.execute(
                    "SELECT size_bucket, COUNT(*) FROM annotations WHERE dataset_id = ? GROUP BY size_bucket",
                    [d],
                )
            ),
        }
        kept = {
            "status": {
                s: n
                for s, n in db.execute(
                    "SELECT status, images FROM dataset_status_stats WHERE dataset_id = ?", [d]
                )
                if n
            },
            "class": {
                c: (b, i)
                for c, b, i in db.execute(
                    "SELECT class_id, boxes, images FROM dataset_class_stats WHERE dataset_id = ?", [d]
                )
                if b
            },
            "class_status": {
                (c, s): n
                for c, s, n in db.execute(
                    "SELECT class_id, status, images FROM dataset_class_status_stats WHERE dataset_id = ?",
                    [d],
                )
                if n
            },
            "size": {
                b: n
                for b, n in db.execute(
                    "SELECT bucket, boxes FROM dataset_size_stats WHERE dataset_id = ?", [d]
                )
                if n
            },
        }
    finally:
        db.conn.close()
    assert recount["class"] and kept == recount
