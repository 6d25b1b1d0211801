"""Checking image bytes before anything decodes them: real type from magic bytes, size and pixel caps, truncation."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.errors import Invalid, TooLarge, UnsupportedType
from appliance.imaging.exif import orientation_of, swaps_axes

# format -> (file extension, Content-Type)
FORMATS = {
    "jpeg": ("jpg", "image/jpeg"),
    "png": ("png", "image/png"),
    "bmp": ("bmp", "image/bmp"),
    "webp": ("webp", "image/webp"),
    "tiff": ("tiff", "image/tiff"),
}
EXTENSION_TYPES = {ext: mime for ext, mime in FORMATS.values()}


@dataclass(frozen=True)
class CheckedImage:
    """What the header says. width/height are the oriented size (EXIF applied): the image's pixel space
    everywhere in the appliance; raw_width/raw_height are the stored grid before the orientation."""

    format: str
    width: int
    height: int
    orientation: int = 1
    raw_width: int = 0
    raw_height: int = 0

    @property
    def ext(self) -> str:
        return FORMATS[self.format][0]

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise Invalid("corrupt JPEG: bad marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise Invalid("corrupt JPEG: no frame header found")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise Invalid("corrupt PNG: missing IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise Invalid("corrupt WebP: unknown chunk")


TIFF_SIZE_TAGS = {256: "ImageWidth", 257: "ImageLength"}


def _tiff_size(data: bytes) -> tuple[int, int]:
    """The first directory's size, read strictly: a tag given twice, a size that is not one SHORT or
    LONG, or entries past the end are refused (libtiff and this reader must never disagree: a file
    that says 10 here and 20000 to the decoder would be decoded at 20000x20000 past the pixel cap)."""
    endian = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(endian + "I", data[4:8])
    if offset < 8 or offset + 2 > len(data):
        raise Invalid("corrupt TIFF: IFD outside the file")
    (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
    if count == 0 or offset + 2 + 12 * count > len(data):
        raise Invalid("corrupt TIFF: the first directory runs past the end of the file")
    found: dict[int, int] = {}
    seen: set[int] = set()
    for k in range(count):
        entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
        tag, kind, values = struct.unpack(endian + "HHI", entry[:8])
        if tag in seen:
            raise Invalid(f"ambiguous TIFF: tag {tag} appears twice in the first directory")
        seen.add(tag)
        if tag in TIFF_SIZE_TAGS:
            if values != 1 or kind not in (3, 4):
                raise Invalid(f"corrupt TIFF: {TIFF_SIZE_TAGS[tag]} is not a single SHORT or LONG")
            found[tag] = struct.unpack(
                endian + ("H" if kind == 3 else "I"), entry[8 : 10 if kind == 3 else 12]
            )[0]
    if not found.get(256) or not found.get(257):
        raise Invalid("corrupt TIFF: no image size")
    return found[256], found[257]


_SIZE_READERS = {
    "jpeg": _jpeg_size,
    "png": _png_size,
    "bmp": _bmp_size,
    "webp": _webp_size,
    "tiff": _tiff_size,
}


def _looks_truncated(fmt: str, data: bytes) -> bool:
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-64:]
    if fmt == "png":
        return b"IEND" not in data[-16:]
    return False


def check_image_bytes(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Everything that can be refused without decoding: type, byte size, claimed pixel count, truncation."""
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedType("not an image: accepted types are JPEG, PNG, BMP, WebP and TIFF")
    try:
        width, height = _SIZE_READERS[fmt](data)
    except (struct.error, IndexError):
        raise Invalid(f"corrupt {fmt.upper()}: header cannot be read") from None
    if width <= 0 or height <= 0:
        raise Invalid(f"corrupt {fmt.upper()}: image size {width}x{height}")
    if width * height > max_pixels:
        raise TooLarge(f"image claims {width}x{height} pixels; the limit is {max_pixels} pixels")
    if _looks_truncated(fmt, data):
        raise Invalid(f"truncated {fmt.upper()}: the file ends before the image does")
    orientation = orientation_of(fmt, data)
    oriented = (height, width) if swaps_axes(orientation) else (width, height)
    return CheckedImage(fmt, oriented[0], oriented[1], orientation, width, height)


def decode_image(data: bytes, checked: CheckedImage, reduce: int = 1) -> np.ndarray:
    """Decode after check_image_bytes, EXIF orientation applied; `reduce` (2, 4, 8) lets JPEG decode at a
    fraction of the size. Waits its turn under the process's decode budget (see DecodeBudget)."""
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(
        reduce, cv2.IMREAD_REDUCED_COLOR_8 if reduce >= 8 else cv2.IMREAD_COLOR
    )
    if checked.format != "jpeg":
        flags = cv2.IMREAD_COLOR
    with DECODE_BUDGET.hold(checked.pixels):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise Invalid(f"corrupt {checked.format.upper()}: the image cannot be decoded")
    if flags == cv2.IMREAD_COLOR and (image.shape[1], image.shape[0]) != (checked.width, checked.height):
        raise Invalid(
            f"corrupt {checked.format.upper()}: header says {checked.width}x{checked.height}, "
            f"pixels are {image.shape[1]}x{image.shape[0]}"
        )
    return image


class DecodeBudget:
    """Pixels being decoded at once in this process, bounded: a decode waits while others hold the budget.

    Each image is capped by `max_image_pixels` before it is decoded, but six 80 Mpx PNGs at once still
    took the web process to 1.4 GB and starved its event loop. One decode larger than the whole budget
    may still run, alone.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.in_flight = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight == 0 or self.in_flight + pixels <= self.max_pixels)
            self.in_flight += pixels
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= pixels
                self._cond.notify_all()


# Two images at the default pixel cap (80 Mpx): about 0.5 GB of decoded BGR at most, whatever the load.
DECODE_BUDGET = DecodeBudget(160_000_000)
