"""COCO detection JSON: images, categories and bbox annotations ([x, y, width, height] in pixels)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from appliance.errors import AppError
from appliance.transfers.formats import (
    MAX_ANNOTATION_FILE_BYTES,
    ImageIndex,
    LabeledBox,
    ParsedSet,
    SourceItem,
    Tree,
    read_small,
)


def load_coco(path: Path) -> dict[str, Any] | None:
    """The parsed file when it is a COCO detection file, else None."""
    try:
        data = json.loads(read_small(path, MAX_ANNOTATION_FILE_BYTES))
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data:
        return data
    return None


def coco_files(tree: Tree) -> list[Path]:
    found = []
    for path in tree.with_suffix(".json"):
        with open(path, "rb") as handle:
            head = handle.read(65536)
        if b'"images"' in head or b'"annotations"' in head or b'"categories"' in head:
            found.append(path)
    return found


def _parse_file(path: Path, data: dict[str, Any], index: ImageIndex, result: ParsedSet) -> None:
    rel = index.tree.rel(path)
    categories: dict[Any, str] = {}
    for category in data.get("categories") or []:
        if isinstance(category, dict) and "id" in category and "name" in category:
            categories[category["id"]] = str(category["name"])
            if str(category["name"]) not in result.classes:
                result.classes.append(str(category["name"]))
    items: dict[Any, SourceItem] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "file_name" not in image or "id" not in image:
            result.skipped.append((rel, "an image entry without id or file_name"))
            continue
        found = index.find(path.parent, str(image["file_name"]))
        if found is None:
            result.skipped.append((str(image["file_name"]), f"named in {rel} but not found"))
            continue
        items[image["id"]] = SourceItem(found, index.tree.rel(found), [])
    for n, annotation in enumerate(data.get("annotations") or []):
        if not isinstance(annotation, dict):
            continue
        item = items.get(annotation.get("image_id"))
        if item is None:
            continue
        bbox = annotation.get("bbox")
        name = categories.get(annotation.get("category_id"))
        if name is None:
            result.skipped.append((item.name, f"box skipped: annotation {n} has an unknown category"))
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            result.skipped.append((item.name, f"box skipped: annotation {n} has no [x, y, w, h] bbox"))
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            result.skipped.append((item.name, f"box skipped: annotation {n} is not finite"))
            continue
        assert item.boxes is not None
        item.boxes.append(LabeledBox(name, x, y, x + w, y + h))
    result.items.extend(items.values())


def parse(tree: Tree) -> ParsedSet:
    result = ParsedSet("coco")
    index = ImageIndex(tree)
    seen: set[Path] = set()
    for path in coco_files(tree):
        try:
            data = load_coco(path)
        except AppError as exc:
            result.skipped.append((tree.rel(path), exc.detail))
            continue
        if data is None:
            continue
        _parse_file(path, data, index, result)
    unique = []
    for item in result.items:
        if item.path not in seen:
            seen.add(item.path)
            unique.append(item)
    result.items = unique
    return result
