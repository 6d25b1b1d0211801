"""COCO detection JSON: images, categories and bbox annotations ([x, y, width, height] in pixels).

Every COCO file of the folder is read (the official `annotations/` holds captions_*, instances_* and
person_keypoints_* side by side): files without boxes (captions, image lists) are reported and left out,
person keypoints whose boxes repeat an instances file are left out with their boxes counted, and the boxes
of an image named in several files are merged. A file `<kind>_<subset>.json` finds its images in
`images/<subset>/` or `<subset>/` first (Datumaro, CVAT and the official layout), where the same file name
may be in train and val. `iscrowd: 1` regions are ignore regions, not objects: skipped and counted.
Images under the folder that no file names come in unlabeled.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

from appliance.transfers.formats import ImageIndex, LabeledBox, ParsedSet, SourceItem, Tree
from appliance.transfers.formats.coco_stream import (
    BAD_BBOX,
    BAD_CATEGORY,
    CROWD,
    FIELDS,
    MAX_BOXES,
    CocoFile,
    Key,
    read_coco,
)


def coco_files(tree: Tree) -> list[Path]:
    found = []
    for path in tree.with_suffix(".json"):
        with open(path, "rb") as handle:
            head = handle.read(65536)
        if b'"images"' in head or b'"annotations"' in head or b'"categories"' in head:
            found.append(path)
    return found


@dataclass
class PackedBoxes:
    """An image's boxes from one or more COCO files, kept packed until the import's thread reads them."""

    name: str  # the (first) file they come from, for the report
    parts: list[tuple[array, list[str | None]]] = field(default_factory=list)  # packed, category names

    def read(self) -> tuple[list[LabeledBox], list[str]]:
        boxes: list[LabeledBox] = []
        problems: list[str] = []
        for packed, names in self.parts:
            for start in range(0, len(packed), FIELDS):
                index, x, y, w, h, number, code = packed[start : start + FIELDS]
                n = int(number)
                name = names[int(index)]
                if code == BAD_BBOX:
                    problems.append(f"annotation {n} has no [x, y, w, h] bbox of finite numbers")
                elif code == BAD_CATEGORY:
                    problems.append(f"annotation {n}: its category_id is not a number or a string")
                elif code == CROWD:
                    problems.append(f"annotation {n} is an iscrowd region (an area to ignore, not an object)")
                elif name is None:
                    problems.append(f"annotation {n} has an unknown category")
                else:
                    boxes.append(LabeledBox(name, x, y, x + w, y + h))
        return boxes, problems


def _subset(path: Path) -> str:
    """instances_val2017.json -> val2017; person_keypoints_train.json -> train; instances.json -> ''."""
    stem = path.stem
    return stem.rsplit("_", 1)[1] if "_" in stem else ""


def _usable(files: dict[Path, CocoFile], tree: Tree, result: ParsedSet) -> list[Path]:
    """The files whose boxes are imported; the others are reported with why (and their boxes counted)."""
    detection = {p: f for p, f in files.items() if f.with_bbox > 0 or (f.categories and f.images)}
    for path, coco in files.items():
        if path not in detection:
            what = "captions" if coco.with_caption else "image entries only"
            result.skipped.append((tree.rel(path), f"no boxes in this COCO file ({what})"))
    plain = [p for p, f in detection.items() if f.with_keypoints < f.with_bbox or not f.with_bbox]
    used = []
    for path, coco in detection.items():
        repeats = [p for p in plain if p != path and _subset(p) == _subset(path)]
        if coco.with_bbox and coco.with_keypoints == coco.with_bbox and repeats:
            result.skipped_boxes.append(
                (
                    tree.rel(path),
                    f"box skipped: person keypoints; their boxes repeat those of {repeats[0].name}",
                    coco.box_count(),
                )
            )
            continue
        used.append(path)
    return used


def parse(tree: Tree) -> ParsedSet:
    result = ParsedSet("coco")
    index = ImageIndex(tree)
    budget = [MAX_BOXES]
    files: dict[Path, CocoFile] = {}
    for path in coco_files(tree):
        coco = read_coco(path, budget)
        if coco.error:
            result.skipped.append((tree.rel(path), coco.error))
        files[path] = coco
    items: dict[Path, SourceItem] = {}
    for path in _usable(files, tree, result):
        _add_file(path, files[path], index, items, result)
    for coco in files.values():
        for name in coco.category_order:
            if name not in result.classes:
                result.classes.append(name)
    result.items.extend(items.values())
    named = set(items)
    result.items.extend(SourceItem(p, tree.rel(p)) for p in tree.images() if p not in named)
    return result


def _add_file(
    path: Path, coco: CocoFile, index: ImageIndex, items: dict[Path, SourceItem], result: ParsedSet
) -> None:
    tree = index.tree
    rel = tree.rel(path)
    if coco.bad_images:
        result.skipped.append((rel, f"{coco.bad_images} image entries without an id or a file_name"))
    for reason, count in coco.bad_annotations:
        result.skipped_boxes.append((rel, f"box skipped: {reason}", count))
    names = [coco.categories.get(key) if key is not None else None for key in coco.category_keys]
    subset = _subset(path)
    listed: set[Key] = set()
    for key, file_name, width, height in coco.images:
        packed = coco.boxes.get(key, array("d"))
        if key in listed:
            continue  # an id listed twice: its boxes were taken with the first entry
        listed.add(key)
        found = index.find(path.parent, file_name, subset)
        if found is None:
            result.skipped.append((file_name, f"named in {rel} but not found"))
            if packed:
                result.skipped_boxes.append(
                    (file_name, "box skipped: its image is not in the folder", len(packed) // FIELDS)
                )
            continue
        item = items.get(found)
        if item is None:
            item = items[found] = SourceItem(found, tree.rel(found), [], PackedBoxes(rel))
            item.declared_size = (width, height) if width and height else None
        assert isinstance(item.label_file, PackedBoxes)
        if packed:
            item.label_file.parts.append((packed, names))
    orphans = sum(len(p) // FIELDS for key, p in coco.boxes.items() if key not in listed)
    if orphans:
        result.skipped_boxes.append(
            (rel, "box skipped: its image_id is not among the file's images", orphans)
        )
