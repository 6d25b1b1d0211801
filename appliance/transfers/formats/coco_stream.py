"""One COCO JSON file read as a stream of parser events: memory is bounded by the boxes kept, never the file.

ijson's C backend (yajl) hands out events; only what an import needs is built (image entries, categories,
and per annotation its image_id, category_id, bbox and iscrowd, packed into arrays of doubles); segmentation
polygons, RLE masks, captions and keypoints pass by as events. Measured on a 134 MB instances file: 21 MB
peak RSS, where a typed msgspec decode over a memory map took 234 MB; but msgspec read it in 0.4 s against
11 s. So files up to 64 MB are decoded at once with msgspec (fast, memory about twice the file) and larger
ones are streamed (bench/imports.py `--coco-mb` reports the time and peak RSS of both).

A bad value skips its annotation with the reason (a 400-digit number, a list as image_id, a 200,000-deep
nesting, which is walked with a counter and never built); broken JSON stops the file where it breaks, with
what was read before kept and the rest reported.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import ijson
import msgspec

from appliance.errors import TooLarge
from appliance.storage import read_capped

SECTIONS = ("images", "annotations", "categories")
MAX_TEXT = 4096  # a file_name or a category name
FAST_PARSE_BYTES = 64 * 1024 * 1024  # decoded at once up to this size; larger files are streamed
MAX_LIST = 16  # scalars kept of a list field (a bbox has 4)
# Boxes kept in memory for one import, 7 doubles each (56 bytes): 4 million is about 220 MB.
MAX_BOXES = 4_000_000
FIELDS = 7  # packed per box: category index, x, y, w, h, annotation number, code
OK, CROWD, BAD_BBOX, BAD_CATEGORY = 0.0, 1.0, 2.0, 3.0
_COMPLEX = object()  # a value nested deeper than the fields we read: skipped, never built

Key = int | str  # an image or category id as the file writes it


def _key(value: Any) -> Key | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return value if not isinstance(value, str) or len(value) <= MAX_TEXT else None
    if isinstance(value, Decimal) and value == value.to_integral_value() and abs(value) < 2**63:
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        return None
    return number if number == number and abs(number) != float("inf") else None


@dataclass
class CocoFile:
    """What one file holds that an import uses, boxes packed per image id."""

    categories: dict[Key, str] = field(default_factory=dict)
    category_order: list[str] = field(default_factory=list)
    images: list[tuple[Key, str, int, int]] = field(default_factory=list)  # id, file_name, width, height
    boxes: dict[Key, array] = field(default_factory=dict)
    category_keys: list[Key | None] = field(default_factory=list)  # packed index -> category id
    annotations: int = 0
    with_bbox: int = 0
    with_keypoints: int = 0
    with_caption: int = 0
    bad_images: int = 0  # image entries without a usable id or file_name
    bad_annotations: list[tuple[str, int]] = field(default_factory=list)  # (reason, count), box skipped
    error: str = ""  # why the file stopped early, if it did

    def box_count(self) -> int:
        return sum(len(packed) // FIELDS for packed in self.boxes.values())


class _Reader:
    def __init__(self, budget: list[int]) -> None:
        self.out = CocoFile()
        self.budget = budget  # [boxes left for the whole import]: shared by the files of one import
        self.category_index: dict[Key | None, int] = {}
        self.bad: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.bad[reason] = self.bad.get(reason, 0) + 1

    def not_a_record(self, section: str) -> None:
        if section == "annotations":
            self.out.annotations += 1
            self.skip("an annotation that is not an object")
        elif section == "images":
            self.out.bad_images += 1

    def record(self, section: str, fields: dict[str, Any], number: int) -> None:
        if section == "images":
            self._image(fields)
        elif section == "categories":
            key, name = _key(fields.get("id")), fields.get("name")
            if key is not None and isinstance(name, str | int) and not isinstance(name, bool):
                self.out.categories[key] = str(name)[:MAX_TEXT]
                if str(name) not in self.out.category_order:
                    self.out.category_order.append(str(name)[:MAX_TEXT])
        else:
            self._annotation(fields, number)

    def _image(self, fields: dict[str, Any]) -> None:
        key, name = _key(fields.get("id")), fields.get("file_name")
        if key is None or not isinstance(name, str) or not name or len(name) > MAX_TEXT:
            self.out.bad_images += 1
            return
        width, height = _number(fields.get("width")), _number(fields.get("height"))
        size = (int(width), int(height)) if width and height and width > 0 and height > 0 else (0, 0)
        self.out.images.append((key, name, *size))

    def _annotation(self, fields: dict[str, Any], number: int) -> None:
        out = self.out
        out.annotations += 1
        out.with_keypoints += "keypoints" in fields
        out.with_caption += "caption" in fields
        if "bbox" not in fields:
            return  # a caption: not a box
        out.with_bbox += 1
        image = _key(fields.get("image_id"))
        if image is None:
            self.skip("its image_id is not a number or a string")
            return
        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise TooLarge(
                f"the COCO files hold more than {MAX_BOXES} boxes, more than an import keeps in memory"
            )
        code = OK
        bbox = fields["bbox"]
        values = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else []
        if len(values) != 4 or any(v is None for v in values):
            code, values = BAD_BBOX, [0.0, 0.0, 0.0, 0.0]
        category = fields.get("category_id")
        category_key = _key(category)
        if category_key is None and code == OK:
            code = BAD_CATEGORY
        if fields.get("iscrowd") in (1, True) and code == OK:
            code = CROWD
        index = self.category_index.setdefault(category_key, len(self.category_index))
        if index == len(out.category_keys):
            out.category_keys.append(category_key)
        packed = out.boxes.get(image)
        if packed is None:
            packed = out.boxes[image] = array("d")
        packed.extend((index, *values, number, code))  # type: ignore[arg-type]


class _FastImage(msgspec.Struct, gc=False):
    id: Any = None
    file_name: Any = None
    width: Any = None
    height: Any = None


class _FastCategory(msgspec.Struct, gc=False):
    id: Any = None
    name: Any = None


class _FastAnnotation(msgspec.Struct, gc=False):
    image_id: Any = None
    category_id: Any = None
    bbox: Any = msgspec.UNSET
    iscrowd: Any = None
    keypoints: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # a view of the bytes, never built
    caption: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _FastFile(msgspec.Struct):
    images: list[_FastImage] | None = None
    annotations: list[_FastAnnotation] | None = None
    categories: list[_FastCategory] | None = None


def _read_fast(data: bytes, reader: _Reader) -> CocoFile:
    """A typed decode of the whole file (msgspec: ~10x the event reader's speed, memory ~2x the file)."""
    parsed = msgspec.json.decode(data, type=_FastFile)
    for category in parsed.categories or []:
        reader.record("categories", {"id": category.id, "name": category.name}, 0)
    for image in parsed.images or []:
        reader.record("images", msgspec.structs.asdict(image), 0)
    for number, annotation in enumerate(parsed.annotations or []):
        fields = {k: v for k, v in msgspec.structs.asdict(annotation).items() if v is not msgspec.UNSET}
        reader.record("annotations", fields, number)
    reader.out.bad_annotations = sorted(reader.bad.items())
    return reader.out


def read_coco(path: Path, budget: list[int]) -> CocoFile:
    """One COCO file; `budget` is the boxes the whole import may still keep (lowered here).

    Up to FAST_PARSE_BYTES it is decoded at once; a larger file, or one the typed decode refuses (one bad
    value or a deep nesting refuses it all), is streamed event by event, where one bad value costs only its
    own annotation."""
    if path.stat().st_size <= FAST_PARSE_BYTES:
        kept = budget[0]
        try:
            return _read_fast(read_capped(path, FAST_PARSE_BYTES), _Reader(budget))
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            budget[0] = kept  # what the refused attempt counted is counted again below
    return _read_stream(path, budget)


def _read_stream(path: Path, budget: list[int]) -> CocoFile:
    reader = _Reader(budget)
    depth = 0  # nesting of the event stream
    section = ""  # the top-level list we are in, when it is one we read
    key = ""  # the last map key seen at the record's own level
    fields: dict[str, Any] = {}
    collecting: list[Any] | None = None  # a list field of a record being gathered
    skip_to = -1  # inside a value we skip: the depth at which it ends
    number = 0  # records of the current section
    with open(path, "rb") as handle:
        try:
            for event, value in ijson.basic_parse(handle, use_float=False, buf_size=256 * 1024):
                if event in ("start_map", "start_array"):
                    depth += 1
                    if skip_to >= 0:
                        continue
                    if depth == 2 and event == "start_array" and key in SECTIONS:
                        section, number = key, 0
                    elif depth == 3 and section:
                        if event == "start_map":
                            fields = {}
                        else:  # a list where a record should be: walked past, never built
                            reader.not_a_record(section)
                            number += 1
                            skip_to = 2
                    elif depth == 4 and section and event == "start_array" and collecting is None:
                        collecting = []
                    elif depth >= 3 and section:
                        if collecting is not None:  # a list nested in a list field: not a box
                            collecting = None
                        fields[key] = _COMPLEX
                        skip_to = depth - 1
                    continue
                if event in ("end_map", "end_array"):
                    depth -= 1
                    if skip_to >= 0:
                        if depth == skip_to:
                            skip_to = -1
                        continue
                    if depth == 3 and collecting is not None:
                        fields[key] = collecting
                        collecting = None
                    elif depth == 2 and section and event == "end_map":
                        reader.record(section, fields, number)
                        number += 1
                    elif depth == 1 and section:
                        section = ""
                    continue
                if skip_to >= 0:
                    continue
                if event == "map_key":
                    if depth == 1 or depth == 3:
                        key = value
                    continue
                if collecting is not None:
                    if len(collecting) < MAX_LIST:
                        collecting.append(value)
                    continue
                if depth == 3 and section:
                    fields[key] = value[: MAX_TEXT + 1] if isinstance(value, str) else value
                elif depth == 2 and section:  # a scalar where a record should be
                    reader.not_a_record(section)
                    number += 1
        except ijson.common.JSONError as exc:
            reader.out.error = f"not valid JSON from there on ({str(exc).splitlines()[0][:200]})"
        except (ValueError, ArithmeticError) as exc:  # a number yajl reads but Python cannot hold
            reader.out.error = f"not valid JSON from there on ({type(exc).__name__})"
    reader.out.bad_annotations = sorted(reader.bad.items())
    return reader.out
