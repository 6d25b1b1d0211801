"""Which format a folder holds: COCO JSON, Pascal VOC XML, YOLO txt labels, else plain images."""

from __future__ import annotations

from appliance.errors import Invalid
from appliance.transfers.formats import FORMAT_NAMES, ParsedSet, Tree, coco, plain, voc, yolo

PARSERS = {"yolo": yolo.parse, "coco": coco.parse, "voc": voc.parse, "plain": plain.parse}


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


def parse_tree(tree: Tree, fmt: str = "auto") -> ParsedSet:
    if fmt == "auto":
        fmt = detect_format(tree)
        if fmt == "coco":  # a JSON that only looked like COCO: go on with the other formats
            parsed = coco.parse(tree)
            if parsed.items:
                parsed.skipped[:0] = tree.skipped
                return parsed
            fmt = detect_format(tree, skip_coco=True)
    if fmt not in FORMAT_NAMES:
        raise Invalid(f"unknown format {fmt!r}: choose auto, {', '.join(FORMAT_NAMES)}")
    parsed = PARSERS[fmt](tree)
    parsed.skipped[:0] = tree.skipped
    return parsed
