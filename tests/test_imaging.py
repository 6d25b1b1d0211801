"""Image checks before decoding: the EXIF-oriented pixel space for every format, strict TIFF headers, and a
bounded number of pixels decoded at once."""

from __future__ import annotations

import io
import struct
import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from appliance.errors import Invalid, TooLarge
from appliance.imaging.check import DecodeBudget, check_image_bytes, decode_image
from appliance.imaging.exif import orient_box
from appliance.imaging.thumbnail import decode_for_thumbnail

RAW_W, RAW_H = 120, 48
MARK = (10, 7)  # a white 3x3 mark at this raw pixel; everything else dark
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}


def marked_image(fmt: str, orientation: int) -> bytes:
    raw = np.full((RAW_H, RAW_W, 3), 20, np.uint8)
    x, y = MARK
    raw[y - 1 : y + 2, x - 1 : x + 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(raw).save(out, fmt, exif=exif.tobytes(), **options)
    return out.getvalue()


def brightest(image: np.ndarray) -> tuple[int, int]:
    gray = image.max(axis=2).astype(np.float32)
    y, x = np.unravel_index(int(gray.argmax()), gray.shape)
    return int(x), int(y)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_oriented_size_is_what_the_decoder_gives(fmt, orientation):
    data = marked_image(fmt, orientation)
    checked = check_image_bytes(data, max_bytes=10**7, max_pixels=10**7)
    assert checked.format == FORMATS[fmt] and checked.orientation == orientation
    assert (checked.raw_width, checked.raw_height) == (RAW_W, RAW_H)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert (checked.width, checked.height) == (decoded.shape[1], decoded.shape[0])
    assert decode_image(data, checked).shape == decoded.shape
    # A box around the mark in raw pixels lands on the mark in the oriented image.
    x1, y1, x2, y2 = orient_box((MARK[0], MARK[1], MARK[0] + 1, MARK[1] + 1), orientation, RAW_W, RAW_H)
    found = brightest(decoded)
    assert x1 - 2 <= found[0] <= x2 + 1 and y1 - 2 <= found[1] <= y2 + 1, (found, (x1, y1, x2, y2))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_thumbnails_are_oriented_like_the_full_decode(orientation):
    data = marked_image("JPEG", orientation)
    checked = check_image_bytes(data, max_bytes=10**7, max_pixels=10**7)
    thumb = decode_for_thumbnail(data, checked, 32)  # simplejpeg's DCT-scaled path
    assert thumb.shape[1] / thumb.shape[0] == pytest.approx(checked.width / checked.height, rel=0.1)
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    fx, fy = brightest(full)
    tx, ty = brightest(thumb)
    scale = thumb.shape[1] / full.shape[1]
    assert abs(tx - fx * scale) <= 3 and abs(ty - fy * scale) <= 3


def tiff_with_entries(entries: list[tuple[int, int, int]], pixels: bytes = b"\0" * 30) -> bytes:
    """A little-endian TIFF whose first directory holds (tag, type, value) entries, count 1 each."""
    header = b"II*\x00" + struct.pack("<I", 8)
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return header + ifd + struct.pack("<I", 0) + pixels


def test_a_tiff_that_names_its_width_twice_is_refused_before_decoding(monkeypatch):
    """The 389 KB bomb: ImageWidth 20000 then 10; libtiff takes the first, a lenient reader the last."""
    bomb = tiff_with_entries([(256, 4, 20000), (256, 4, 10), (257, 4, 20000), (258, 3, 8), (277, 3, 3)])
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(Invalid, match="appears twice"):
        check_image_bytes(bomb, max_bytes=10**7, max_pixels=80_000_000)
    honest = tiff_with_entries([(256, 4, 20000), (257, 4, 20000), (258, 3, 8)])
    with pytest.raises(TooLarge):
        check_image_bytes(honest, max_bytes=10**7, max_pixels=80_000_000)
    for bad in (
        tiff_with_entries([(256, 4, 10)]),  # no height
        tiff_with_entries([(256, 2, 10), (257, 4, 10)]),  # width as ASCII
        b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 500),  # entries past the end
    ):
        with pytest.raises(Invalid):
            check_image_bytes(bad, max_bytes=10**7, max_pixels=80_000_000)


def test_the_decode_budget_bounds_pixels_in_flight():
    budget = DecodeBudget(100)
    seen: list[int] = []  # in_flight as each holder saw it while holding
    lock = threading.Lock()

    def decode(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                seen.append(budget.in_flight)
            time.sleep(0.02)

    threads = [threading.Thread(target=decode, args=(60,)) for _ in range(6)]
    threads.append(threading.Thread(target=decode, args=(500,)))  # larger than the budget: runs alone
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert all(not t.is_alive() for t in threads) and budget.in_flight == 0
    assert len(seen) == 7
    # Two 60-pixel decodes never overlap (120 > 100), and the 500-pixel one held the budget alone.
    assert sorted(seen) == [60] * 6 + [500]
