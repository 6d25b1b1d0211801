"""Exports: YOLO, COCO and VOC archives streamed over HTTP, round trips, pycocotools, ultralytics' checker, USB."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from appliance.db import open_database
from tests import transfers_support
from tests.helpers import API, create_dataset
from tests.models import write_yolo_dataset
from tests.transfers_support import boxes_by_hash, import_folder, run_jobs

config = transfers_support.config  # fixtures: a config with an import root (overrides conftest's), that root
media = transfers_support.media


@pytest.fixture
def source_dataset(client, admin, config, media):
    """A labelled dataset of 10 synthetic images, with one box edited to non-integer coordinates."""
    write_yolo_dataset(media / "original", count=10)
    dataset = create_dataset(client, admin, name="original", classes=["square", "disc"])
    job = import_folder(client, admin, config, dataset["id"], media / "original")
    assert job["result"]["imported"] == 10
    image = client.get(f"{API}/datasets/{dataset['id']}/images", headers=admin).json()["items"][0]
    current = client.get(f"{API}/images/{image['id']}/annotations", headers=admin).json()
    put = client.put(
        f"{API}/images/{image['id']}/annotations",
        headers=admin,
        json={
            "version": current["version"],
            "boxes": [{"class_id": 1, "x1": 1.25, "y1": 2.5, "x2": 40.125, "y2": 50.75}],
        },
    )
    assert put.status_code == 200, put.text
    return dataset


def download(client, headers, dataset_id: int, fmt: str) -> bytes:
    response = client.get(f"{API}/datasets/{dataset_id}/export", params={"format": fmt}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"-{fmt}.zip" in response.headers["content-disposition"]
    return response.content


def unpack(data: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        archive.extractall(folder)
    return folder


def assert_same_boxes(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for sha, boxes in left.items():
        other = right[sha]
        assert len(boxes) == len(other), sha
        for a, b in zip(boxes, other, strict=True):
            assert a[0] == b[0]
            assert a[1:] == pytest.approx(b[1:], abs=1e-4)


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_round_trip(client, admin, config, media, source_dataset, fmt):
    data = download(client, admin, source_dataset["id"], fmt)
    assert data == download(client, admin, source_dataset["id"], fmt)  # deterministic archive
    unpack(data, media / f"export-{fmt}")
    target = create_dataset(client, admin, name=f"copy-{fmt}", classes=[])
    job = import_folder(client, admin, config, target["id"], media / f"export-{fmt}")
    assert job["status"] == "completed" and job["result"]["format"] == fmt, job
    assert job["result"]["imported"] == 10 and job["result"]["skipped"] == 0, job["result"]
    assert_same_boxes(boxes_by_hash(config, source_dataset["id"]), boxes_by_hash(config, target["id"]))
    # The images keep the names they had, not the archive's <id>_<stem> entry names.
    assert names_by_hash(config, target["id"]) == names_by_hash(config, source_dataset["id"])


def names_by_hash(config, dataset_id: int) -> dict[str, str]:
    db = open_database(config.db_path)
    try:
        rows = db.execute(
            "SELECT f.sha256, i.original_name FROM images i JOIN image_files f ON f.id = i.file_id "
            "WHERE i.dataset_id = ?",
            [dataset_id],
        ).fetchall()
    finally:
        db.conn.close()
    return dict(rows)


def test_pycocotools_loads_the_coco_export(client, admin, media, source_dataset):
    from pycocotools.coco import COCO

    folder = unpack(download(client, admin, source_dataset["id"], "coco"), media / "coco")
    coco = COCO(str(folder / "annotations.json"))
    assert len(coco.getImgIds()) == 10
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["square", "disc"]
    total = sum(len(v) for v in coco.imgToAnns.values())
    stats = client.get(f"{API}/datasets/{source_dataset['id']}/stats", headers=admin).json()
    assert total == stats["boxes"]
    for image in coco.loadImgs(coco.getImgIds()):
        assert (folder / "images" / image["file_name"]).exists()
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            x, y, w, h = annotation["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]


def test_ultralytics_accepts_the_yolo_export(client, admin, media, source_dataset, tmp_path):
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(tmp_path / "ultralytics-config")
    from ultralytics.data.utils import check_det_dataset

    folder = unpack(download(client, admin, source_dataset["id"], "yolo"), media / "yolo")
    data = yaml.safe_load((folder / "data.yaml").read_text())
    assert "path" not in data  # resolved next to data.yaml, wherever the archive is unpacked
    checked = check_det_dataset(str(folder / "data.yaml"), autodownload=False)
    assert checked["nc"] == 2 and checked["names"] == {0: "square", 1: "disc"}
    train = sorted(p.name for p in (folder / "images" / "train").iterdir())
    val = sorted(p.name for p in (folder / "images" / "val").iterdir())
    assert train and val and not set(train) & set(val)
    assert len(train) + len(val) == 10
    for split in ("train", "val"):
        stems = {p.stem for p in (folder / "images" / split).iterdir()}
        assert stems == {p.stem for p in (folder / "labels" / split).iterdir()}


def test_voc_export_is_plain_pascal_voc(client, admin, media, source_dataset):
    from defusedxml import ElementTree

    folder = unpack(download(client, admin, source_dataset["id"], "voc"), media / "voc")
    xmls = sorted((folder / "Annotations").glob("*.xml"))
    assert len(xmls) == 10
    root = ElementTree.parse(xmls[0]).getroot()
    assert root.tag == "annotation" and (folder / "JPEGImages" / root.findtext("filename")).exists()
    assert root.find("size/width").text == "96"
    assert len((folder / "ImageSets" / "Main" / "default.txt").read_text().split()) == 10


def test_export_needs_read_access_and_a_known_format(client, admin, source_dataset):
    from tests.helpers import create_user

    other = create_user(client, admin, "lars", "labeler")
    assert client.get(f"{API}/datasets/{source_dataset['id']}/export", headers=other).status_code == 404
    bad = client.get(f"{API}/datasets/{source_dataset['id']}/export", params={"format": "csv"}, headers=admin)
    assert bad.status_code == 400


def test_export_streams_in_chunks_without_loading_the_dataset(
    config, client, admin, source_dataset, monkeypatch
):
    from appliance.transfers import exporters

    monkeypatch.setattr(exporters, "CHUNK", 1024)
    monkeypatch.setattr(exporters, "FLUSH_AT", 1024)
    chunks = list(exporters.export_archive(config, source_dataset["id"], "yolo"))
    assert len(chunks) > 40  # produced piece by piece as the files are read, not as one buffer
    assert max(len(c) for c in chunks) < 3 * 1024
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert "data.yaml" in archive.namelist() and archive.testzip() is None


def test_usb_export_job_writes_the_archive_under_the_root(
    client, admin, config, media, source_dataset, tmp_path
):
    stick = media / "usb0"
    stick.mkdir()
    outside = client.post(
        f"{API}/datasets/{source_dataset['id']}/exports/usb",
        json={"path": str(tmp_path), "format": "coco"},
        headers=admin,
    )
    assert outside.status_code == 403
    response = client.post(
        f"{API}/datasets/{source_dataset['id']}/exports/usb",
        json={"path": str(stick), "format": "coco"},
        headers=admin,
    )
    assert response.status_code == 202, response.text
    run_jobs(config)
    job = client.get(f"{API}/usb-exports/{response.json()['id']}", headers=admin).json()
    assert job["status"] == "completed", job
    written = Path(job["result"]["file"])
    assert written.parent == stick and written.name.startswith("original-coco-")
    assert [p.name for p in stick.iterdir()] == [written.name]  # no partial file left
    with zipfile.ZipFile(written) as archive:
        assert len(json.loads(archive.read("annotations.json"))["images"]) == 10
    assert client.get(f"{API}/usb-exports", headers=admin).json()[0]["id"] == job["id"]
