"""Dataset archives in YOLO (ultralytics layout), COCO JSON or Pascal VOC, zipped on the fly in small chunks.

The export reads one consistent snapshot of the catalog (one read transaction) on its own connection,
walks the images page by page and copies each file in 1 MB pieces: memory stays flat however large the
dataset. The YOLO train/val split is a pure function of each image's content hash, so two exports of the
same images give the same split.
"""

from __future__ import annotations

import itertools
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import yaml

from appliance.config import Config
from appliance.db import Database, open_database
from appliance.errors import Invalid
from appliance.imaging.check import FORMATS
from appliance.storage import ImageStore

EXPORT_FORMATS = ("yolo", "coco", "voc")
PAGE = 500
CHUNK = 1024 * 1024
FLUSH_AT = 64 * 1024  # hand out what the zip writer produced once this much is waiting
VAL_PERCENT = 20
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # entry timestamps: the same images give the same archive bytes
STORED_SUFFIXES = tuple(f".{ext}" for ext, _ in FORMATS.values())

Content = Path | bytes | Iterable[bytes]


@dataclass
class ExportImage:
    id: int
    sha256: str
    ext: str
    width: int
    height: int
    stem: str
    boxes: list[tuple[int, float, float, float, float]]


def _safe_stem(image_id: int, original: str) -> str:
    base = original.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:60]
    return f"{image_id:07d}_{base}" if base else f"{image_id:07d}"


def _classes(db: Database, dataset_id: int) -> tuple[str, list[str]]:
    row = db.execute("SELECT name, classes FROM datasets WHERE id = ?", [dataset_id]).fetchone()
    if row is None:
        raise Invalid(f"dataset {dataset_id} is gone")
    return row[0], [c["name"] for c in json.loads(row[1])]


def iter_images(db: Database, dataset_id: int, include_unlabeled: bool) -> Iterator[ExportImage]:
    """Images with their boxes, keyset-paged by id."""
    after = 0
    status_filter = "" if include_unlabeled else "AND i.status != 'unlabeled'"
    while True:
        rows = db.execute(
            f"""SELECT i.id, f.sha256, f.format, f.width, f.height, i.original_name
                FROM images i JOIN image_files f ON f.id = i.file_id
                WHERE i.dataset_id = ? AND i.id > ? {status_filter} ORDER BY i.id LIMIT ?""",
            [dataset_id, after, PAGE],
        ).fetchall()
        if not rows:
            return
        ids = [r[0] for r in rows]
        boxes: dict[int, list[tuple[int, float, float, float, float]]] = {i: [] for i in ids}
        marks = ",".join("?" * len(ids))
        for image_id, class_id, x1, y1, x2, y2 in db.execute(
            f"SELECT image_id, class_id, x1, y1, x2, y2 FROM annotations WHERE image_id IN ({marks}) "
            "ORDER BY image_id, id",
            ids,
        ):
            boxes[image_id].append((class_id, x1, y1, x2, y2))
        for image_id, sha256, fmt, width, height, original in rows:
            yield ExportImage(
                image_id,
                sha256,
                FORMATS[fmt][0],
                width,
                height,
                _safe_stem(image_id, original),
                boxes[image_id],
            )
        after = ids[-1]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- YOLO ---------------------------------------------------------------------------------------


def _is_val(sha256: str) -> bool:
    return int(sha256[:8], 16) % 100 < VAL_PERCENT


def yolo_entries(
    db: Database, store: ImageStore, dataset_id: int, include_unlabeled: bool
) -> Iterator[tuple[str, Content]]:
    """images/{train,val}/, labels/{train,val}/ and data.yaml: `yolo train data=data.yaml` as is."""
    name, classes = _classes(db, dataset_id)
    shas = sorted(
        r[0]
        for r in db.execute(
            "SELECT f.sha256 FROM images i JOIN image_files f ON f.id = i.file_id WHERE i.dataset_id = ?"
            + ("" if include_unlabeled else " AND i.status != 'unlabeled'"),
            [dataset_id],
        )
    )
    # ultralytics needs a non-empty val set: the smallest hash goes there when the split left it empty.
    forced_val = shas[0] if shas and not any(_is_val(s) for s in shas) else None
    both = len(shas) == 1  # one image: it serves as train and val
    del shas
    for image in iter_images(db, dataset_id, include_unlabeled):
        val = _is_val(image.sha256) or image.sha256 == forced_val
        splits = ["train", "val"] if both else ["val" if val else "train"]
        lines = "".join(
            f"{c} {_fmt6((x1 + x2) / 2 / image.width)} {_fmt6((y1 + y2) / 2 / image.height)} "
            f"{_fmt6((x2 - x1) / image.width)} {_fmt6((y2 - y1) / image.height)}\n"
            for c, x1, y1, x2, y2 in image.boxes
        )
        for split in splits:
            yield f"images/{split}/{image.stem}.{image.ext}", store.image_path(image.sha256, image.ext)
            yield f"labels/{split}/{image.stem}.txt", lines.encode()
    data = {
        "train": "images/train",
        "val": "images/val",
        "nc": len(classes),
        "names": dict(enumerate(classes)),
    }
    header = f"# dataset {name!r} exported by the appliance; train with: yolo train data=data.yaml\n"
    yield "data.yaml", (header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)).encode()


def _fmt6(value: float) -> str:
    # 10 significant digits: a box survives export -> import to well under a thousandth of a pixel.
    return f"{value:.10g}"


# --- COCO ---------------------------------------------------------------------------------------


def coco_entries(
    db: Database, store: ImageStore, dataset_id: int, include_unlabeled: bool
) -> Iterator[tuple[str, Content]]:
    """annotations.json (category ids from 1, bbox [x, y, w, h]) and images/."""
    name, classes = _classes(db, dataset_id)

    def annotation_json() -> Iterator[bytes]:
        head = {
            "info": {"description": f"dataset {name} exported by the appliance", "version": "1.0"},
            "licenses": [],
            "categories": [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(classes)],
        }
        yield json.dumps(head)[:-1].encode() + b', "images": ['
        first = True
        for image in iter_images(db, dataset_id, include_unlabeled):
            entry = {
                "id": image.id,
                "file_name": f"{image.stem}.{image.ext}",
                "width": image.width,
                "height": image.height,
            }
            yield (b"" if first else b", ") + json.dumps(entry).encode()
            first = False
        yield b'], "annotations": ['
        first = True
        annotation_id = 0
        for image in iter_images(db, dataset_id, include_unlabeled):
            parts = []
            for c, x1, y1, x2, y2 in image.boxes:
                annotation_id += 1
                w, h = x2 - x1, y2 - y1
                parts.append(
                    json.dumps(
                        {
                            "id": annotation_id,
                            "image_id": image.id,
                            "category_id": c + 1,
                            "bbox": [x1, y1, w, h],
                            "area": w * h,
                            "iscrowd": 0,
                            "segmentation": [],
                        }
                    )
                )
            if parts:
                yield (b"" if first else b", ") + ", ".join(parts).encode()
                first = False
        yield b"]}"

    yield "annotations.json", annotation_json()
    for image in iter_images(db, dataset_id, include_unlabeled):
        yield f"images/{image.stem}.{image.ext}", store.image_path(image.sha256, image.ext)


# --- Pascal VOC ---------------------------------------------------------------------------------


def voc_xml(image: ExportImage, classes: list[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{image.stem}.{image.ext}"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for c, x1, y1, x2, y2 in image.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[c] if c < len(classes) else str(c)
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = _number(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def voc_entries(
    db: Database, store: ImageStore, dataset_id: int, include_unlabeled: bool
) -> Iterator[tuple[str, Content]]:
    """Annotations/*.xml (pixel corners as stored, 0-based), JPEGImages/, ImageSets/Main/default.txt."""
    _name, classes = _classes(db, dataset_id)
    stems: list[str] = []
    for image in iter_images(db, dataset_id, include_unlabeled):
        stems.append(image.stem)
        yield f"JPEGImages/{image.stem}.{image.ext}", store.image_path(image.sha256, image.ext)
        yield f"Annotations/{image.stem}.xml", voc_xml(image, classes)
    yield "ImageSets/Main/default.txt", ("\n".join(stems) + "\n").encode()
    yield "labels.txt", ("\n".join(classes) + "\n").encode()


WRITERS = {"yolo": yolo_entries, "coco": coco_entries, "voc": voc_entries}


# --- zip on the fly -----------------------------------------------------------------------------


class _Sink:
    """A write-only, unseekable file: zipfile then writes data descriptors and never seeks back."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


def zip_stream(entries: Iterable[tuple[str, Content]]) -> Iterator[bytes]:
    """A zip archive as a sequence of chunks; images are stored, text is deflated."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = (
                zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
            )
            large = isinstance(content, Path) and content.stat().st_size > 1 << 30
            with archive.open(info, "w", force_zip64=large) as out:
                if isinstance(content, Path):
                    with open(content, "rb") as handle:
                        while chunk := handle.read(CHUNK):
                            out.write(chunk)
                            if sink.size >= FLUSH_AT:
                                yield sink.take()
                elif isinstance(content, bytes):
                    out.write(content)
                else:
                    for piece in content:
                        out.write(piece)
                        if sink.size >= FLUSH_AT:
                            yield sink.take()
            if sink.size >= FLUSH_AT:
                yield sink.take()
    yield sink.take()


# Archive entries are named <image id>_<safe stem> (unique, portable); this file, at the archive's root,
# maps each stem back to the image's original name, so a round trip through another tool keeps the names.
NAMES_FILE = "appliance-names.json"


def original_names(db: Database, dataset_id: int, include_unlabeled: bool) -> bytes:
    status_filter = "" if include_unlabeled else "AND status != 'unlabeled'"
    names = {
        _safe_stem(image_id, original): original
        for image_id, original in db.execute(
            f"SELECT id, original_name FROM images WHERE dataset_id = ? {status_filter} ORDER BY id",
            [dataset_id],
        )
    }
    return json.dumps({"version": 1, "names": names}, ensure_ascii=False).encode()


def export_archive(
    config: Config, dataset_id: int, fmt: str, include_unlabeled: bool = False
) -> Iterator[bytes]:
    """The zip of one dataset, read from one snapshot on a connection of its own (closed at the end)."""
    if fmt not in WRITERS:
        raise Invalid(f"unknown export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    db = open_database(config.db_path)
    store = ImageStore(config)
    try:
        db.execute("BEGIN")  # one read snapshot: labels edited meanwhile do not tear the export
        entries = WRITERS[fmt](db, store, dataset_id, include_unlabeled)
        names = [(NAMES_FILE, original_names(db, dataset_id, include_unlabeled))]
        yield from zip_stream(itertools.chain(entries, names))
    finally:
        if db.conn.in_transaction:
            db.execute("COMMIT")
        db.conn.close()


def archive_name(dataset_name: str, fmt: str, stamp: str = "") -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name).strip("._") or "dataset"
    return f"{safe}-{fmt}{'-' + stamp if stamp else ''}.zip"
