"""Decode, validate and encode images (Pillow), with the limits checked before decoding.

Decoding reads the header first and refuses a declared size over the pixel limit before a
single pixel is decompressed (decompression-bomb guard).
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.exceptions import ImageTooLargeException, InvalidImageException
from utils.masks import mask_to_png_array

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF"})
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    # Lossless, and fast enough for 2048 px images (level 6 is ~3x slower for ~5% size).
    "png": {"compress_level": 3},
    "jpeg": {"quality": 95, "subsampling": 0},
    "webp": {"quality": 95, "method": 4},
}


def _open_checked(data: bytes, max_pixels: int, what: str) -> Image.Image:
    if not data:
        raise InvalidImageException(f"the {what} file is empty")
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's bomb warning/error would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # declared size far beyond any sane limit
        raise ImageTooLargeException(
            f"the {what} declares more than {max_pixels} pixels: {exc}"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidImageException(f"the {what} file is not a readable image") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidImageException(
            f"the {what} is {image.format}; accepted formats: PNG, JPEG, WEBP, BMP, TIFF"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageException(f"the {what} has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeException(
            f"the {what} declares {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels}"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageException(f"the {what} file is truncated or corrupt") from exc
    # Clicks are given in the orientation the user sees, so honour EXIF rotation.
    return ImageOps.exif_transpose(image)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded photo as an HxWx3 uint8 RGB array."""
    image = _open_checked(data, max_pixels, "image")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas are composited on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def decode_mask_image(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded mask as its raw uint8 array (HxW, HxWx3 or HxWx4), for `binarize_mask`."""
    image = _open_checked(data, max_pixels, "mask")
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def encode_image(array: np.ndarray, output_format: str) -> bytes:
    """Encode an HxWx3 (or HxW) uint8 array as png, jpeg or webp."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(
        buffer, format=_PIL_FORMAT[output_format], **_SAVE_OPTIONS[output_format]
    )
    return buffer.getvalue()


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_mask_base64(mask: np.ndarray) -> str:
    """A bool mask as base64 PNG with 0/255 pixels."""
    return to_base64(encode_image(mask_to_png_array(mask), "png"))
