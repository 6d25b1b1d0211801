"""Readers of labelled image sets: each turns a folder into SourceItems with boxes named by class."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.errors import AppError, TooLarge
from appliance.storage import read_capped

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMAT_NAMES = ("yolo", "coco", "voc", "plain")
MAX_SMALL_FILE_BYTES = 4 * 1024 * 1024  # data.yaml, classes.txt, one VOC XML, one YOLO label file
# Folders of masks and drawings that tools write beside the photos (VOC, labelme): never imported as photos.
MASK_FOLDERS = frozenset(
    name.lower()
    for name in (
        "SegmentationClass", "SegmentationObject", "SegmentationClassPNG", "SegmentationObjectPNG",
        "SegmentationClassVisualization", "SegmentationObjectVisualization", "SegmentationClassAug",
        "AnnotationsVisualization",
    )
)  # fmt: skip


class BoxReader(Protocol):
    """Boxes still to read for one image (a YOLO label file, a COCO file's packed boxes): read in the
    import's worker threads beside the image, not while parsing."""

    @property
    def name(self) -> str: ...  # what the report names when a box of it is skipped

    def read(self) -> tuple[list[LabeledBox], list[str]]: ...


@dataclass
class LabeledBox:
    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    normalized: bool = False  # YOLO: fractions of the image size, resolved once the size is known


@dataclass(frozen=True)
class LabelFile:
    """A YOLO label file, read by the import's worker threads beside its image (not while parsing)."""

    path: Path
    name: str  # relative to the import root, for the report
    class_names: list[str]  # class number -> name

    def read(self) -> tuple[list[LabeledBox], list[str]]:
        from appliance.transfers.formats.yolo import parse_label_file

        return parse_label_file(self.path, self.class_names)


@dataclass
class SourceItem:
    path: Path
    name: str  # path relative to the import root, kept as the image's original name
    boxes: list[LabeledBox] | None = None  # None: no labels known (plain image); []: labelled, no objects
    label_file: BoxReader | None = None  # boxes still to read (YOLO label file, COCO packed boxes)
    # (width, height) the annotation file states for the image, if any: tells whether its boxes are in
    # the raw or the EXIF-oriented pixel grid (see importer.to_oriented_space).
    declared_size: tuple[int, int] | None = None

    def read_boxes(self) -> list[tuple[str, str]]:
        """Fill `boxes` from the label file, if there is one; the (name, reason) of every line skipped."""
        if self.label_file is None:
            return []
        label, self.label_file = self.label_file, None
        try:
            self.boxes, problems = label.read()
        except AppError as exc:
            self.boxes, problems = [], [exc.detail]
        return [(label.name, f"box skipped: {problem}") for problem in problems]


@dataclass
class ParsedSet:
    format: str
    classes: list[str] = field(default_factory=list)  # declared order (data.yaml, categories)
    items: list[SourceItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    # Boxes left out while parsing, many at once: (name, "box skipped: ...", how many boxes).
    skipped_boxes: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Tree:
    """Regular files under the import root, gathered once (links and devices skipped, count capped)."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        text, prefix = str(path), f"{self.root}/"
        if text.startswith(prefix):  # every path in the tree was joined onto root: a string cut is enough
            return text[len(prefix) :]
        return path.relative_to(self.root).as_posix()

    def images(self) -> list[Path]:
        """Photos: image files outside the mask and visualization folders."""
        return [p for p in self.files if p.suffix.lower() in IMAGE_SUFFIXES and not self.is_mask(p)]

    def masks(self) -> list[Path]:
        return [p for p in self.files if p.suffix.lower() in IMAGE_SUFFIXES and self.is_mask(p)]

    def is_mask(self, path: Path) -> bool:
        return any(part.lower() in MASK_FOLDERS for part in self.rel(path).split("/")[:-1])

    def with_suffix(self, *suffixes: str) -> list[Path]:
        return [p for p in self.files if p.suffix.lower() in suffixes]


def walk_tree(root: Path, max_entries: int) -> Tree:
    """Files under root without following links; symlinks, hardlinked and special files are skipped."""
    tree = Tree(root)
    seen = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            tree.skipped.append(
                (tree.rel(folder) if folder != root else ".", f"cannot read folder: {exc.strerror}")
            )
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries:
                raise TooLarge(f"the source has more than {max_entries} entries (max_import_entries)")
            path = Path(entry.path)
            if entry.name.startswith(".") and entry.name not in (".",):
                continue  # macOS ._ files, .Trash, .git: never part of a dataset
            if entry.is_symlink():
                tree.skipped.append((tree.rel(path), "symbolic link"))
                continue
            info = entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            elif not entry.is_file(follow_symlinks=False):
                tree.skipped.append((tree.rel(path), "not a regular file (device, FIFO or socket)"))
            elif info.st_nlink > 1:
                tree.skipped.append((tree.rel(path), "hard link"))
            else:
                tree.files.append(path)
    tree.files.sort()
    return tree


def read_small(path: Path, limit: int = MAX_SMALL_FILE_BYTES) -> bytes:
    return read_capped(path, limit)


def read_text(path: Path, limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """A small text file as UTF-8 without its byte-order mark (ultralytics reads labels as utf-8-sig)."""
    return read_small(path, limit).decode("utf-8-sig", "replace")


def iter_images(tree: Tree) -> Iterator[Path]:
    yield from tree.images()


class ImageIndex:
    """Finds the image an annotation file names: relative to it, under images/ or JPEGImages/, or by name."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.by_rel = {tree.rel(p): p for p in tree.images()}
        self.by_name: dict[str, list[Path]] = {}
        for path in self.by_rel.values():
            self.by_name.setdefault(path.name, []).append(path)

    def find(self, base: Path, file_name: str, subset: str = "") -> Path | None:
        """`subset` (from instances_<subset>.json) looks in images/<subset>/ first: Datumaro and CVAT keep
        each subset's images there, where the same file name may appear in train and val."""
        file_name = file_name.replace("\\", "/")
        if ".." in file_name.split("/") or file_name.startswith("/"):
            file_name = file_name.rsplit("/", 1)[-1]
        subsets = (base.parent / "images" / subset, self.tree.root / "images" / subset) if subset else ()
        for folder in (
            *subsets,
            base,
            base / "images",
            base.parent / "images",
            base.parent / "JPEGImages",
            self.tree.root,
        ):
            try:
                rel = (folder / file_name).relative_to(self.tree.root).as_posix()
            except ValueError:
                continue
            if rel in self.by_rel:
                return self.by_rel[rel]
        matches = self.by_name.get(file_name.rsplit("/", 1)[-1], [])
        return matches[0] if len(matches) == 1 else None
