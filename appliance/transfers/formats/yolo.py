"""YOLO sets: images with one label .txt each (class cx cy w h, normalized) and their class names.

Names come from an ultralytics dataset YAML of any name with a `names` key (data.yaml, coco8.yaml, ...),
else classes.txt, obj.names or Roboflow's darknet `_darknet.labels`. Text is read as UTF-8 without a
byte-order mark, as ultralytics does. Label files that match no image are reported with their boxes.
"""

from __future__ import annotations

import math
import posixpath
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import AppError, Invalid
from appliance.transfers.formats import (
    MAX_SMALL_FILE_BYTES,
    LabeledBox,
    LabelFile,
    ParsedSet,
    SourceItem,
    Tree,
    read_small,
    read_text,
)

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")  # preferred over other YAML files
CLASS_FILES = ("classes.txt", "obj.names", "classes.names", "_darknet.labels")
CLASS_SUFFIXES = (".names", ".labels")  # darknet class lists of any name
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
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def _has_names(path: Path) -> bool:
    """A YAML file with a top-level `names:` key (an ultralytics dataset file, whatever its name)."""
    try:
        head = read_text(path, MAX_SMALL_FILE_BYTES)
    except AppError:
        return False
    return any(line.startswith("names:") for line in head.splitlines())


def find_class_file(tree: Tree) -> Path | None:
    by_depth = sorted(tree.files, key=lambda p: (len(p.parts), p.as_posix()))
    for path in by_depth:
        if path.name.lower() in YAML_NAMES:
            return path
    for path in by_depth:
        if path.suffix.lower() in (".yaml", ".yml") and _has_names(path):
            return path
    for path in by_depth:
        if path.name.lower() in CLASS_FILES or path.suffix.lower() in CLASS_SUFFIXES:
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
    for n, line in enumerate(read_text(path).splitlines(), 1):
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
    labels = {tree.rel(p): p for p in tree.with_suffix(".txt") if p != class_file and not _is_list(p)}
    names = result.classes or [str(i) for i in range(1000)]
    used: set[Path] = set()
    for image in tree.images():
        item = SourceItem(image, tree.rel(image))
        label = label_path_for(item.name, labels)
        if label is not None:  # read with the image, in the import's threads (SourceItem.read_boxes)
            item.label_file = LabelFile(label, tree.rel(label), names)
            used.add(label)
        result.items.append(item)
    for rel, path in labels.items():  # a label file without its image: its boxes are counted, not lost
        if path not in used:
            try:
                count = sum(1 for line in read_text(path).splitlines() if _is_label_line(line))
            except AppError:
                count = 0
            if count:
                result.skipped_boxes.append((rel, "box skipped: the label file matches no image", count))
            elif "labels" in rel.split("/")[:-1]:
                result.skipped.append((rel, "label file matches no image"))
    return result


def _is_label_line(line: str) -> bool:
    fields = line.split()
    try:
        int(fields[0])
        [float(v) for v in fields[1:]]
    except (ValueError, IndexError):
        return False
    return len(fields) >= 5


def _is_list(path: Path) -> bool:
    """Text files that are not label files: class lists, split lists (train.txt), readmes."""
    return path.name.lower() in (*CLASS_FILES, "train.txt", "val.txt", "test.txt", "labels.txt") or (
        path.parent.name.lower() != "labels" and path.stem.lower().startswith("readme")
    )
