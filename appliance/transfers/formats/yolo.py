"""YOLO sets: images with one label .txt each (class cx cy w h, normalized) and data.yaml or classes.txt names."""

from __future__ import annotations

import math
import posixpath
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import AppError, Invalid
from appliance.transfers.formats import LabeledBox, LabelFile, ParsedSet, SourceItem, Tree, read_small

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
CLASS_FILES = ("classes.txt", "obj.names", "classes.names")
MAX_CLASSES = 1000


def _names_from_yaml(path: Path) -> list[str]:
    try:
        # safe_load only: a `!!python/object` tag is refused, never constructed.
        data: Any = yaml.safe_load(read_small(path))
    except yaml.YAMLError as exc:
        raise Invalid(f"{path.name}: not a plain YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise Invalid(f"{path.name}: no 'names' list of classes")
    names = data["names"]
    if isinstance(names, dict):
        try:
            values = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise Invalid(f"{path.name}: 'names' keys must be class numbers") from None
    elif isinstance(names, list):
        values = names
    else:
        raise Invalid(f"{path.name}: 'names' must be a list or a mapping")
    # Only plain scalars: aliases nesting lists in lists (a YAML "billion laughs") are refused, not printed.
    if len(values) > MAX_CLASSES or not all(isinstance(v, str | int | float) for v in values):
        raise Invalid(f"{path.name}: 'names' must be at most {MAX_CLASSES} plain names")
    return [str(v) for v in values]


def _names_from_txt(path: Path) -> list[str]:
    text = read_small(path).decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_class_file(tree: Tree) -> Path | None:
    by_depth = sorted(tree.files, key=lambda p: (len(p.parts), p.as_posix()))
    for names in (YAML_NAMES, CLASS_FILES):
        for path in by_depth:
            if path.name.lower() in names:
                return path
    return None


def label_path_for(image_rel: str, labels: dict[str, Path]) -> Path | None:
    """ultralytics: .../images/<split>/x.jpg -> .../labels/<split>/x.txt; darknet: x.txt beside x.jpg."""
    stem = posixpath.splitext(image_rel)[0]
    parts = stem.split("/")
    candidates = []
    for i in range(len(parts) - 2, -1, -1):  # the nearest "images" folder above the file
        if parts[i] == "images":
            candidates.append("/".join([*parts[:i], "labels", *parts[i + 1 :]]) + ".txt")
            break
    candidates.append(stem + ".txt")
    for candidate in candidates:
        if candidate in labels:
            return labels[candidate]
    return None


def parse_label_file(path: Path, names: list[str]) -> tuple[list[LabeledBox], list[str]]:
    boxes: list[LabeledBox] = []
    problems: list[str] = []
    text = read_small(path).decode("utf-8", "replace")
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            class_id = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            problems.append(f"line {n}: not numbers")
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:  # segmentation polygon: its bounding box
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            problems.append(f"line {n}: expected 'class cx cy w h'")
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.append(f"line {n}: coordinates are not finite")
            continue
        if not 0 <= class_id < len(names):
            problems.append(f"line {n}: class {class_id} has no name in the class list")
            continue
        boxes.append(LabeledBox(names[class_id], x1, y1, x2, y2, normalized=True))
    return boxes, problems


def parse(tree: Tree) -> ParsedSet:
    result = ParsedSet("yolo")
    class_file = find_class_file(tree)
    if class_file is not None:
        try:
            if class_file.suffix.lower() in (".yaml", ".yml"):
                result.classes = _names_from_yaml(class_file)
            else:
                result.classes = _names_from_txt(class_file)
        except AppError as exc:
            result.skipped.append((tree.rel(class_file), exc.detail))
    labels = {tree.rel(p): p for p in tree.with_suffix(".txt") if p != class_file}
    names = result.classes or [str(i) for i in range(1000)]
    for image in tree.images():
        item = SourceItem(image, tree.rel(image))
        label = label_path_for(item.name, labels)
        if label is not None:  # read with the image, in the import's threads (SourceItem.read_boxes)
            item.label_file = LabelFile(label, tree.rel(label), names)
        result.items.append(item)
    return result
