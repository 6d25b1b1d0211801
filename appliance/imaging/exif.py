"""EXIF orientation as the decoders apply it: JPEG APP1, PNG eXIf, WebP EXIF chunks and TIFF tag 274.

OpenCV's IMREAD_COLOR (and the reduced variants) rotates the pixels by the Orientation tag for JPEG, PNG,
WebP and TIFF, and so does every browser drawing an <img>; ultralytics sizes images with `exif_size`. The
appliance's one pixel space for an image is therefore the oriented one: width and height after applying
the tag. Orientations 5-8 swap width and height.
"""

from __future__ import annotations

import struct

ORIENTATION_TAG = 0x0112
MAX_IFD_ENTRIES = 4096  # a real IFD0 has a few dozen; more is a crafted file


def swaps_axes(orientation: int) -> bool:
    return orientation in (5, 6, 7, 8)


def tiff_orientation(tiff: bytes) -> int:
    """Orientation from a TIFF structure (the body of an EXIF block, or a TIFF file); 1 when absent."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    endian = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack(endian + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(endian + "H", tiff[offset : offset + 2])
    for k in range(min(count, MAX_IFD_ENTRIES)):
        start = offset + 2 + 12 * k
        entry = tiff[start : start + 12]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(endian + "HH", entry[:4])
        if tag == ORIENTATION_TAG and kind == 3:  # SHORT
            (value,) = struct.unpack(endian + "H", entry[8:10])
            return value if 1 <= value <= 8 else 1
    return 1


def jpeg_orientation(data: bytes) -> int:
    """The first APP1 "Exif" segment before the image data, as libjpeg-based readers take it."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return 1
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end: no EXIF after this point counts
            return 1
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return tiff_orientation(data[i + 10 : i + 2 + length])
        i += 2 + length
    return 1


def png_orientation(data: bytes) -> int:
    """The eXIf chunk (it must come before the image data)."""
    i, n = 8, len(data)
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        if kind == b"eXIf":
            return tiff_orientation(data[i + 8 : i + 8 + length])
        if kind in (b"IDAT", b"IEND"):
            return 1
        i += 12 + length
    return 1


def webp_orientation(data: bytes) -> int:
    """The EXIF chunk of an extended (VP8X) WebP."""
    i, n = 12, len(data)
    while i + 8 <= n:
        kind = data[i : i + 4]
        (length,) = struct.unpack("<I", data[i + 4 : i + 8])
        if kind == b"EXIF":
            body = data[i + 8 : i + 8 + length]
            return tiff_orientation(body[6:] if body.startswith(b"Exif\x00\x00") else body)
        i += 8 + length + (length & 1)
    return 1


def orientation_of(fmt: str, data: bytes) -> int:
    readers = {
        "jpeg": jpeg_orientation,
        "png": png_orientation,
        "webp": webp_orientation,
        "tiff": tiff_orientation,
    }
    reader = readers.get(fmt)
    if reader is None:
        return 1
    try:
        return reader(data)
    except struct.error:
        return 1  # a damaged EXIF block: the decoders ignore it too


def orient_point(
    x: float, y: float, orientation: int, raw_width: float, raw_height: float
) -> tuple[float, float]:
    """A point of the stored (raw) pixel grid in the oriented image's coordinates."""
    w, h = raw_width, raw_height
    return {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (h - y, x),
        7: (h - y, w - x),
        8: (y, w - x),
    }.get(orientation, (x, y))


def orient_box(
    box: tuple[float, float, float, float], orientation: int, raw_width: float, raw_height: float
) -> tuple[float, float, float, float]:
    """A box (x1, y1, x2, y2) given in raw pixels, in the oriented image's pixels."""
    x1, y1 = orient_point(box[0], box[1], orientation, raw_width, raw_height)
    x2, y2 = orient_point(box[2], box[3], orientation, raw_width, raw_height)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
