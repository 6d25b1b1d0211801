"""Pascal VOC: one XML per image (filename, size, objects with name and bndbox), parsed with defusedxml.

Coordinates are read as 0-based pixel edges by default, as Datumaro, CVAT and labelme write them (and as
the appliance exports them). `origin=1` reads them the VOC devkit's way, 1-based inclusive pixel indices:
xmin/ymin move one pixel left/up, xmax/ymax stay (detectron2 reads VOC so; ultralytics' converter also
shifts xmax/ymax by one). A `labels.txt` at the top (the appliance's own VOC export) gives the class order
and the classes without boxes. The image is the one `<filename>` names, else the XML's stem in the
JPEGImages/ beside its Annotations/ folder, else a unique image with that stem.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from appliance.errors import AppError, Invalid
from appliance.transfers.formats import (
    ImageIndex,
    LabeledBox,
    ParsedSet,
    SourceItem,
    Tree,
    read_small,
    read_text,
)


def parse_xml(path: Path) -> Element:
    """Entities and DTDs are refused (billion laughs, external entities) before anything expands."""
    data = read_small(path)
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise Invalid(f"{path.name}: XML with a DTD or entities is refused ({type(exc).__name__})") from None
    except ParseError as exc:
        raise Invalid(f"{path.name}: not well-formed XML ({exc})") from None


def is_voc(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return b"<annotation" in head


def _number(element: Element | None, tag: str) -> float:
    node = element.find(tag) if element is not None else None
    if node is None or node.text is None:
        raise ValueError(f"no <{tag}>")
    value = float(node.text)
    if not math.isfinite(value):
        raise ValueError(f"<{tag}> is not finite")
    return value


def _declared_size(root: Element) -> tuple[int, int] | None:
    try:
        width, height = int(_number(root.find("size"), "width")), int(_number(root.find("size"), "height"))
    except (ValueError, OverflowError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _find_image(index: ImageIndex, path: Path, file_name: str) -> Path | None:
    image = index.find(path.parent, file_name)
    if image is not None:
        return image
    # <filename> out of date (renamed files): the XML's stem in JPEGImages/ beside Annotations/ first
    same_stem = [p for p in index.by_rel.values() if p.stem == path.stem]
    beside = [p for p in same_stem if p.parent == path.parent.parent / "JPEGImages"]
    if len(beside) == 1:
        return beside[0]
    return same_stem[0] if len(same_stem) == 1 else None


def _labels_file(tree: Tree, result: ParsedSet) -> None:
    for path in tree.files:
        if path.parent == tree.root and path.name.lower() == "labels.txt":
            try:
                names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
            except AppError as exc:
                result.skipped.append((tree.rel(path), exc.detail))
                return
            result.classes.extend(n for n in names if n not in result.classes)


def parse(tree: Tree, *, origin: int = 0) -> ParsedSet:
    result = ParsedSet("voc")
    _labels_file(tree, result)
    index = ImageIndex(tree)
    labeled: dict[Path, SourceItem] = {}
    shift = 1.0 if origin == 1 else 0.0
    for path in tree.with_suffix(".xml"):
        rel = tree.rel(path)
        if not is_voc(path):
            continue
        try:
            root = parse_xml(path)
        except AppError as exc:
            result.skipped.append((rel, exc.detail))
            continue
        file_name = (root.findtext("filename") or "").strip() or path.with_suffix(".jpg").name
        image = _find_image(index, path, file_name)
        objects = list(root.iter("object"))
        if image is None:
            result.skipped.append((rel, f"image {file_name[:300]!r} not found"))
            if objects:
                result.skipped_boxes.append(
                    (rel, "box skipped: its image is not in the folder", len(objects))
                )
            continue
        item = SourceItem(image, tree.rel(image), [], declared_size=_declared_size(root))
        for n, obj in enumerate(objects):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            try:
                x1, y1 = _number(box, "xmin"), _number(box, "ymin")
                x2, y2 = _number(box, "xmax"), _number(box, "ymax")
            except ValueError as exc:
                result.skipped.append((rel, f"box skipped: object {n}: {exc}"))
                continue
            if not name:
                result.skipped.append((rel, f"box skipped: object {n} has no <name>"))
                continue
            assert item.boxes is not None
            item.boxes.append(LabeledBox(name, x1 - shift, y1 - shift, x2, y2))
            if name not in result.classes:
                result.classes.append(name)
        if image in labeled:  # a second XML for the same image: its boxes join the first's
            assert item.boxes is not None
            (labeled[image].boxes or []).extend(item.boxes)
        else:
            labeled[image] = item
            result.items.append(item)
    for image in tree.images():  # images without an XML: unlabeled
        if image not in labeled:
            result.items.append(SourceItem(image, tree.rel(image)))
    return result
