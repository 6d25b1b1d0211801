"""Datasets written by other tools (Datumaro, labelme, Label Studio, ultralytics, Roboflow) import exactly.

Each test counts the source's boxes independently (pycocotools, xml.etree, text parsing), matches the
imported boxes box by box (class, coordinates within 1e-3 px) and proves imported + skipped (with a
reason) = boxes in the source. Fixtures: tests/data/ (see its README for sources and licences).
"""

from __future__ import annotations

import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from appliance.db import open_database
from appliance.imaging.exif import orient_box
from tests import transfers_support
from tests.helpers import API, upload
from tests.transfers_support import boxes_by_hash, import_folder

DATA = Path(__file__).parent / "data"
config = transfers_support.config
media = transfers_support.media


def create_dataset(client, headers, name: str = "parts", classes: list[str] | None = None) -> dict:
    """A dataset with exactly these classes (none by default: the import adds them in the file's order)."""
    body = {"name": name, "classes": classes or [], "is_public": False}
    response = client.post(f"{API}/datasets", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def jpeg(path: Path, width: int, height: int, seed: int = 0, orientation: int = 1) -> None:
    """A JPEG of the size an annotation names (optionally with an EXIF Orientation tag)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation == 1:
        cv2.imwrite(str(path), pixels)
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", exif=exif.tobytes())


def stored_boxes(config, dataset_id: int) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """{original name: sorted boxes} straight from the catalog."""
    return boxes_by_hash(config, dataset_id, key="i.original_name")


def assert_same_boxes(got: list, want: list) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(sorted(got), sorted(want), strict=True):
        assert g[0] == w[0] and all(abs(a - b) < 1e-3 for a, b in zip(g[1:], w[1:], strict=True)), (g, w)


def coco_boxes(path: Path) -> dict[str, list]:
    """file_name -> boxes of non-crowd annotations with a known category, read with pycocotools."""
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    out: dict[str, list] = {}
    for image in coco.loadImgs(coco.getImgIds()):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], iscrowd=None)):
            if ann.get("iscrowd") or ann["category_id"] not in names:
                continue
            x, y, w, h = ann["bbox"]
            out.setdefault(image["file_name"], []).append((names[ann["category_id"]], x, y, x + w, y + h))
    return out


def total_annotations(path: Path) -> int:
    return len(json.loads(path.read_text())["annotations"])


def test_coco_official_layout_reads_every_file(client, admin, config, media):
    """Issue 15 item 1: captions_* sorted first and its image kept, so the keypoints' boxes were dropped."""
    folder = media / "coco"
    shutil.copytree(DATA / "datumaro_coco_keypoints", folder)
    jpeg(folder / "images" / "train" / "1.jpg", 5, 5, seed=1)
    jpeg(folder / "images" / "train" / "2.jpg", 5, 5, seed=2)
    keypoints = folder / "annotations" / "person_keypoints_train.json"
    dataset = create_dataset(client, admin, classes=[])
    report = import_folder(client, admin, config, dataset["id"], folder)["result"]
    assert report["format"] == "coco" and report["imported"] == 2, report
    got = stored_boxes(config, dataset["id"])
    assert_same_boxes(got["images/train/1.jpg"], coco_boxes(keypoints)["1.jpg"])
    assert got["images/train/2.jpg"] == []  # named by the captions only: in, unlabeled
    reasons = {i["name"]: i["reason"] for i in report["skipped_items"]}
    assert "captions" in reasons["annotations/captions_train.json"]
    assert report["boxes"] == 2 and report["boxes_skipped"] == 2  # two with category_id 0 (unknown)
    assert report["boxes"] + report["boxes_skipped"] == total_annotations(keypoints)

    # With an instances file of the same subset, person keypoints repeat its boxes: left out, counted.
    shutil.copy(DATA / "datumaro_coco" / "annotations" / "instances_train.json", folder / "annotations")
    jpeg(folder / "images" / "train" / "a.jpg", 10, 5, seed=3)
    again = create_dataset(client, admin, name="with-instances", classes=[])
    report = import_folder(client, admin, config, again["id"], folder)["result"]
    instances = folder / "annotations" / "instances_train.json"
    assert_same_boxes(stored_boxes(config, again["id"])["images/train/a.jpg"], coco_boxes(instances)["a.jpg"])
    assert report["boxes"] == 1 and report["boxes_skipped"] == 4
    assert report["boxes"] + report["boxes_skipped"] == total_annotations(instances) + total_annotations(
        keypoints
    )
    assert any("repeat those of instances_train.json" in i["reason"] for i in report["skipped_items"])


@pytest.mark.parametrize("streamed", [False, True])
def test_coco_subsets_with_the_same_file_name_and_crowd_regions(
    client, admin, config, media, monkeypatch, streamed
):
    """Items 2, 6, 12: images/<subset>/ with one name in two subsets; iscrowd skipped; unlisted images in."""
    if streamed:  # the event reader that large files take gives the same result
        from appliance.transfers.formats import coco_stream

        monkeypatch.setattr(coco_stream, "FAST_PARSE_BYTES", 0)
    folder = media / "datumaro"
    shutil.copytree(DATA / "datumaro_coco", folder)
    jpeg(folder / "images" / "train" / "a.jpg", 10, 5, seed=1)
    jpeg(folder / "images" / "val" / "b.jpg", 5, 10, seed=2)
    jpeg(folder / "images" / "val" / "a.jpg", 10, 5, seed=3)  # same name in val, named by no file
    dataset = create_dataset(client, admin, classes=[])
    report = import_folder(client, admin, config, dataset["id"], folder)["result"]
    assert report["format"] == "coco" and report["imported"] == 3, report
    got = stored_boxes(config, dataset["id"])
    train = coco_boxes(folder / "annotations" / "instances_train.json")
    val = coco_boxes(folder / "annotations" / "instances_val.json")
    assert_same_boxes(got["images/train/a.jpg"], train["a.jpg"])
    assert_same_boxes(got["images/val/b.jpg"], val["b.jpg"])
    assert got["images/val/a.jpg"] == []
    source = sum(
        total_annotations(folder / "annotations" / f) for f in ("instances_train.json", "instances_val.json")
    )
    assert report["boxes"] == 2 and report["boxes_skipped"] == 1 and source == 3
    assert any("iscrowd" in i["reason"] for i in report["skipped_items"])
    db = open_database(config.db_path)
    statuses = dict(db.execute("SELECT original_name, status FROM images").fetchall())
    db.conn.close()
    assert statuses["images/val/a.jpg"] == "unlabeled" and statuses["images/val/b.jpg"] == "labeled"


def voc_boxes(folder: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for xml in sorted((folder / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        for obj in root.iter("object"):
            b = obj.find("bndbox")
            out.setdefault(xml.stem, []).append(
                (obj.findtext("name"), *(float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")))
            )
    return out


def labelme_voc(folder: Path) -> None:
    shutil.copytree(DATA / "labelme_voc", folder)
    for n, xml in enumerate(sorted((folder / "Annotations").glob("*.xml"))):
        root = ET.parse(xml).getroot()
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        # 2011_000006 is stored as .png while its XML names .jpg: found by its stem in JPEGImages/
        suffix = ".png" if xml.stem == "2011_000006" else ".jpg"
        jpeg(folder / "JPEGImages" / f"{xml.stem}{suffix}", width, height, seed=n)
        if suffix == ".png":
            image = cv2.imread(str(folder / "JPEGImages" / f"{xml.stem}.png"))
            (folder / "JPEGImages" / f"{xml.stem}.png").unlink()
            cv2.imwrite(str(folder / "JPEGImages" / f"{xml.stem}.png"), image)
        jpeg(folder / "AnnotationsVisualization" / f"{xml.stem}.jpg", width, height, seed=10 + n)
        mask = np.zeros((height, width), np.uint8)
        (folder / "SegmentationClass").mkdir(exist_ok=True)
        cv2.imwrite(str(folder / "SegmentationClass" / f"{xml.stem}.png"), mask)


@pytest.mark.parametrize("origin", [0, 1])
def test_labelme_voc_with_masks_drawings_and_renamed_images(client, admin, config, media, origin):
    """Items 5, 10, 11: masks and drawings are not photos; an image found by its stem; voc_origin=1."""
    folder = media / "voc"
    labelme_voc(folder)
    dataset = create_dataset(client, admin, classes=[])
    job = import_folder(client, admin, config, dataset["id"], folder, voc_origin=origin)
    report = job["result"]
    assert report["format"] == "voc" and report["imported"] == 3, report
    reasons = {i["name"]: i["reason"] for i in report["skipped_items"]}
    assert all(
        "not a photo" in reasons[f"{d}/2011_000003.{e}"]
        for d, e in (("SegmentationClass", "png"), ("AnnotationsVisualization", "jpg"))
    )
    got = stored_boxes(config, dataset["id"])
    source = voc_boxes(folder)
    shift = 1.0 if origin else 0.0
    for stem, boxes in source.items():
        name = next(n for n in got if Path(n).stem == stem and n.startswith("JPEGImages/"))
        assert_same_boxes(got[name], [(c, x1 - shift, y1 - shift, x2, y2) for c, x1, y1, x2, y2 in boxes])
    assert report["boxes"] + report["boxes_skipped"] == sum(len(b) for b in source.values()) == 9
    assert report["boxes_skipped"] == 0


def test_voc_export_keeps_class_order_and_unused_classes(client, admin, config, media, tmp_path):
    """Item 9: the VOC export's labels.txt is read back."""
    folder = media / "voc"
    labelme_voc(folder)
    source = create_dataset(client, admin, name="src", classes=["zebra", "person", "unused", "bus", "car"])
    import_folder(client, admin, config, source["id"], folder)
    archive = client.get(f"{API}/datasets/{source['id']}/export", params={"format": "voc"}, headers=admin)
    import zipfile

    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(media / "exported")
    copy = create_dataset(client, admin, name="copy", classes=[])
    report = import_folder(client, admin, config, copy["id"], media / "exported")["result"]
    classes = [c["name"] for c in client.get(f"{API}/datasets/{copy['id']}", headers=admin).json()["classes"]]
    assert classes == ["zebra", "person", "unused", "bus", "car"]
    assert report["boxes"] == 9
    assert sorted(v for v in stored_boxes(config, copy["id"]).values()) == sorted(
        stored_boxes(config, source["id"]).values()
    )


def yolo_lines(path: Path) -> list[list[float]]:
    return [
        [float(v) for v in line.split()]
        for line in path.read_text(encoding="utf-8-sig").splitlines()
        if line.strip()
    ]


def test_label_studio_yolo_with_byte_order_marks_and_orphan_labels(client, admin, config, media):
    """Items 8 and 13: a BOM in classes.txt and in a label file; label files without an image are counted."""
    folder = media / "ls"
    shutil.copytree(DATA / "ls_yolo", folder)
    bom = "\ufeff"
    classes = (folder / "classes.txt").read_text()
    (folder / "classes.txt").write_text(bom + classes, encoding="utf-8")
    label = folder / "labels" / "img_6.txt"
    label.write_text(bom + label.read_text(), encoding="utf-8")
    jpeg(folder / "images" / "img_6.jpeg", 1280, 720)  # the converter's own test image is 1280x720
    dataset = create_dataset(client, admin, classes=[])
    report = import_folder(client, admin, config, dataset["id"], folder)["result"]
    names = [
        c["name"] for c in client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["classes"]
    ]
    assert names == ["closed_door", "opened_door", "bus", "number"]
    want = [
        (names[int(c)], (cx - w / 2) * 1280, (cy - h / 2) * 720, (cx + w / 2) * 1280, (cy + h / 2) * 720)
        for c, cx, cy, w, h in yolo_lines(label)
    ]
    assert_same_boxes(stored_boxes(config, dataset["id"])["images/img_6.jpeg"], want)
    orphans = {f"labels/img_{n}.txt": len(yolo_lines(folder / "labels" / f"img_{n}.txt")) for n in (4, 5, 7)}
    skipped = {i["name"]: i["reason"] for i in report["skipped_items"]}
    assert all("matches no image" in skipped[name] for name in orphans)
    source = sum(len(yolo_lines(p)) for p in (folder / "labels").glob("*.txt"))
    assert report["boxes"] == 4 and report["boxes_skipped"] == sum(orphans.values()) == 9
    assert report["boxes"] + report["boxes_skipped"] == source


def test_class_names_from_coco8_yaml_and_roboflow_darknet_labels(client, admin, config, media):
    """Item 7: names from an ultralytics YAML of any name, and from Roboflow's _darknet.labels."""
    coco8 = media / "coco8"
    coco8.mkdir()
    shutil.copy(DATA / "ultralytics" / "coco8.yaml", coco8)
    jpeg(coco8 / "images" / "train" / "x.jpg", 64, 48)
    (coco8 / "labels" / "train").mkdir(parents=True)
    (coco8 / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 0.25 0.5\n79 0.25 0.25 0.125 0.25\n")
    dataset = create_dataset(client, admin, name="coco8", classes=[])
    import_folder(client, admin, config, dataset["id"], coco8)
    assert_same_boxes(
        stored_boxes(config, dataset["id"])["images/train/x.jpg"],
        [("person", 24, 12, 40, 36), ("toothbrush", 12, 6, 20, 18)],
    )
    roboflow = media / "roboflow"
    (roboflow / "train").mkdir(parents=True)
    (roboflow / "train" / "_darknet.labels").write_text("screw\nwasher\n")
    (roboflow / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    jpeg(roboflow / "train" / "p_jpg.rf.abc.jpg", 40, 20)
    (roboflow / "train" / "p_jpg.rf.abc.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    darknet = create_dataset(client, admin, name="darknet", classes=[])
    report = import_folder(client, admin, config, darknet["id"], roboflow)["result"]
    assert report["format"] == "yolo" and report["skipped_items"] == []
    assert_same_boxes(
        stored_boxes(config, darknet["id"])["train/p_jpg.rf.abc.jpg"], [("washer", 10, 5, 30, 15)]
    )


def test_labels_of_an_image_already_in_the_dataset(client, admin, config, media):
    """Item 4: a duplicate's labels go onto the stored unlabeled copy; otherwise every box is counted."""
    folder = media / "set"
    jpeg(folder / "a.jpg", 40, 20)
    (folder / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (folder / "classes.txt").write_text("part\n")
    dataset = create_dataset(client, admin, classes=[])
    upload(client, admin, dataset["id"], [("a.jpg", (folder / "a.jpg").read_bytes())])
    report = import_folder(client, admin, config, dataset["id"], folder)["result"]
    assert report["duplicates"] == 1 and report["labels_applied"] == 1 and report["boxes"] == 1
    assert_same_boxes(list(stored_boxes(config, dataset["id"]).values())[0], [("part", 10, 5, 30, 15)])
    (folder / "a.txt").write_text("0 0.25 0.25 0.5 0.5\n0 0.75 0.75 0.5 0.5\n")  # other labels for it
    report = import_folder(client, admin, config, dataset["id"], folder)["result"]
    assert report["boxes"] == 0 and report["boxes_skipped"] == 2
    assert any("already in the dataset with its own labels" in i["reason"] for i in report["skipped_items"])


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_photos_get_their_boxes_in_the_oriented_space(client, admin, config, media, orientation):
    """Item 3: a file that states the raw size had its boxes drawn on the raw grid; stated oriented: as is."""
    raw_w, raw_h = 80, 40
    folder = media / f"exif{orientation}"
    jpeg(folder / "images" / "raw.jpg", raw_w, raw_h, seed=1, orientation=orientation)
    jpeg(folder / "images" / "oriented.jpg", raw_w, raw_h, seed=2, orientation=orientation)
    swapped = orientation in (5, 6, 7, 8)
    oriented_size = (raw_h, raw_w) if swapped else (raw_w, raw_h)
    box = [10.0, 5.0, 20.0, 10.0]  # x, y, w, h
    coco = {
        "categories": [{"id": 1, "name": "part"}],
        "images": [
            {"id": 1, "file_name": "raw.jpg", "width": raw_w, "height": raw_h},
            {"id": 2, "file_name": "oriented.jpg", "width": oriented_size[0], "height": oriented_size[1]},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": box, "iscrowd": 0},
        ],
    }
    (folder / "annotations.json").write_text(json.dumps(coco))
    dataset = create_dataset(client, admin, classes=[])
    import_folder(client, admin, config, dataset["id"], folder)
    got = stored_boxes(config, dataset["id"])
    corners = (box[0], box[1], box[0] + box[2], box[1] + box[3])
    raw_space = orient_box(corners, orientation, raw_w, raw_h) if swapped else corners
    assert_same_boxes(got["images/raw.jpg"], [("part", *raw_space)])
    assert_same_boxes(got["images/oriented.jpg"], [("part", *corners)])
    page = client.get(f"{API}/datasets/{dataset['id']}/images", headers=admin).json()["items"]
    assert {(i["width"], i["height"]) for i in page} == {oriented_size}
    # The exports state the oriented size (what ultralytics and browsers see) with the same boxes.
    exported = client.get(f"{API}/datasets/{dataset['id']}/export", params={"format": "coco"}, headers=admin)
    import zipfile

    data = json.loads(zipfile.ZipFile(io.BytesIO(exported.content)).read("annotations.json"))
    assert {(i["width"], i["height"]) for i in data["images"]} == {oriented_size}
