"""Which format a folder holds: COCO JSON, Pascal VOC XML, YOLO txt labels, else plain images."""

from __future__ import annotations

from appliance.errors import Invalid
from appliance.transfers.formats import FORMAT_NAMES, ParsedSet, Tree, coco, plain, voc, yolo


def detect_format(tree: Tree, *, skip_coco: bool = False) -> str:
    if not skip_coco and coco.coco_files(tree):
        return "coco"
    if any(voc.is_voc(p) for p in tree.with_suffix(".xml")[:50]):
        return "voc"
    if yolo.find_class_file(tree) is not None:
        return "yolo"
    stems = {p.with_suffix("").as_posix().replace("/images/", "/labels/") for p in tree.images()}
    stems |= {p.with_suffix("").as_posix() for p in tree.images()}
    if any(p.with_suffix("").as_posix() in stems for p in tree.with_suffix(".txt")):
        return "yolo"
    return "plain"


def _parse(tree: Tree, fmt: str, voc_origin: int) -> ParsedSet:
    if fmt == "voc":
        return voc.parse(tree, origin=voc_origin)
    return {"yolo": yolo.parse, "coco": coco.parse, "plain": plain.parse}[fmt](tree)


def parse_tree(tree: Tree, fmt: str = "auto", *, voc_origin: int = 0) -> ParsedSet:
    """The folder's images with their boxes; links and odd files the walk left out, and masks (VOC
    SegmentationClass/, labelme AnnotationsVisualization/), come first in the skipped list."""
    if fmt not in ("auto", *FORMAT_NAMES):
        raise Invalid(f"unknown format {fmt!r}: choose auto, {', '.join(FORMAT_NAMES)}")
    carried: list[tuple[str, str]] = []
    if fmt == "auto":
        fmt = detect_format(tree)
        if fmt == "coco":
            parsed = coco.parse(tree)
            if parsed.classes or any(item.label_file is not None for item in parsed.items):
                return _with_tree_skips(parsed, tree)
            # JSON files that only looked like COCO: go on with the other formats, keeping why they were left
            carried = parsed.skipped
            fmt = detect_format(tree, skip_coco=True)
    parsed = _parse(tree, fmt, voc_origin)
    parsed.skipped[:0] = carried
    return _with_tree_skips(parsed, tree)


def _with_tree_skips(parsed: ParsedSet, tree: Tree) -> ParsedSet:
    masks = [(tree.rel(p), "a segmentation mask or an annotation drawing, not a photo") for p in tree.masks()]
    parsed.skipped[:0] = [*tree.skipped, *masks]
    return parsed
