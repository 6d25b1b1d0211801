"""Pascal VOC: one XML per image (filename, size, objects with name and bndbox), parsed with defusedxml."""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from appliance.errors import AppError, Invalid
from appliance.transfers.formats import ImageIndex, LabeledBox, ParsedSet, SourceItem, Tree, read_small


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


def parse(tree: Tree) -> ParsedSet:
    result = ParsedSet("voc")
    index = ImageIndex(tree)
    labeled: set[Path] = set()
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
        image = index.find(path.parent, file_name)
        if image is None:  # filename out of date (renamed files): an image with the XML's stem
            same_stem = [p for p in index.by_rel.values() if p.stem == path.stem]
            image = same_stem[0] if len(same_stem) == 1 else None
        if image is None:
            result.skipped.append((rel, f"image {file_name!r} not found"))
            continue
        item = SourceItem(image, tree.rel(image), [])
        for n, obj in enumerate(root.iter("object")):
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
            item.boxes.append(LabeledBox(name, x1, y1, x2, y2))
            if name not in result.classes:
                result.classes.append(name)
        if image not in labeled:
            labeled.add(image)
            result.items.append(item)
    for image in tree.images():  # images without an XML: unlabeled
        if image not in labeled:
            result.items.append(SourceItem(image, tree.rel(image)))
    return result
