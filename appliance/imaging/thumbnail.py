"""Grid thumbnails: the smallest decode that covers the size (JPEG DCT scaling), resized and JPEG-encoded."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.errors import Invalid
from appliance.imaging.check import DECODE_BUDGET, CheckedImage, decode_image

try:  # libjpeg-turbo with DCT scaling to a minimum size and fast IDCT/upsampling: the thumbnail decode
    import simplejpeg
except ImportError:  # pragma: no cover - a platform without its wheel decodes with OpenCV instead
    simplejpeg = None

THUMBNAIL_QUALITY = 80
THUMBNAIL_MEDIA_TYPE = "image/jpeg"


def make_thumbnail(image: np.ndarray, max_px: int) -> bytes:
    """A JPEG at most max_px on its long side; cheap: linear resize unless the downscale is large."""
    height, width = image.shape[:2]
    scale = min(1.0, max_px / max(height, width))
    if scale < 1.0:
        # After the reduced JPEG decode the scale is usually 0.5-1, where INTER_LINEAR looks the same as
        # INTER_AREA at a fifth of the cost; a large shrink (PNG, huge photos) needs INTER_AREA against aliasing.
        image = cv2.resize(
            image,
            (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR,
        )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    if not ok:
        raise Invalid("thumbnail could not be encoded")
    return encoded.tobytes()


def decode_for_thumbnail(data: bytes, checked: CheckedImage, max_px: int) -> np.ndarray:
    """The smallest decode a thumbnail of max_px can be made from (JPEG: DCT-scaled, about half the cost).

    simplejpeg picks the largest libjpeg-turbo scaling whose output still covers max_px on the long side
    and skips OpenCV's extra copies; kinds it does not convert (CMYK, 12-bit) fall back to OpenCV.
    """
    if checked.format == "jpeg" and simplejpeg is not None:
        # simplejpeg decodes the stored grid: its long side is the raw one.
        landscape = (checked.raw_width or checked.width) >= (checked.raw_height or checked.height)
        try:
            with DECODE_BUDGET.hold(checked.pixels):
                image = simplejpeg.decode_jpeg(
                    data,
                    "BGR",
                    fastdct=True,
                    fastupsample=True,
                    min_width=max_px if landscape else 0,
                    min_height=0 if landscape else max_px,
                    strict=False,  # warnings (extra bytes before a marker) pass, as with OpenCV; errors raise
                )
            return apply_orientation(image, checked.orientation)  # simplejpeg ignores EXIF, OpenCV does not
        except ValueError:
            pass
    return decode_image(data, checked, thumbnail_reduce_factor(checked, max_px))


def thumbnail_reduce_factor(checked: CheckedImage, max_px: int) -> int:
    """Largest JPEG DCT scaling that still leaves the decoded image at least max_px on its long side.

    That is the smallest decode the thumbnail can be made from without upscaling (libjpeg rounds the
    reduced size up, so `longest // factor` is a safe lower bound). Other formats decode at full size.
    """
    if checked.format != "jpeg":
        return 1
    longest = max(checked.width, checked.height)
    for factor in (8, 4, 2):
        if longest // factor >= max_px:
            return factor
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/mirror decoded raw pixels by an EXIF orientation, as OpenCV's IMREAD_COLOR does itself."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image
