"""Decode, validate and encode images (Pillow), with the limits checked before decoding.

Decoding reads the header first and refuses a declared size over the pixel limit before a
single pixel is decompressed (decompression-bomb guard). It keeps what the encoder must give
back (`DecodedImage`): the models see 8-bit RGB, while the alpha channel, the colours under
it and an RGB ICC profile travel to the output file. High-bit-depth samples are scaled to
8 bits, never clipped. EXIF orientation is applied to the pixels; no EXIF is written out.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.exceptions import (
    ImageTooLargeException,
    InvalidImageException,
    UnsupportedImageException,
)
from utils.masks import mask_to_png_array

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF"})
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
ORIENTATION_TAG = 0x0112
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap the sides
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    # Lossless, and fast enough for 2048 px images (level 6 is ~3x slower for ~5% size).
    "png": {"compress_level": 3},
    "jpeg": {"quality": 95, "subsampling": 0},
    "webp": {"quality": 95, "method": 4},
}


def probe_image(data: bytes, max_pixels: int, what: str = "image") -> tuple[int, int]:
    """(height, width) as the user sees the image (EXIF rotation applied), from its header
    alone: the checks of `decode_image` that need no pixels (format, size, pixel limit)."""
    image = _open_header(data, max_pixels, what)
    height, width = image.height, image.width
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    return (width, height) if orientation in TRANSPOSED_ORIENTATIONS else (height, width)


def _open_checked(data: bytes, max_pixels: int, what: str) -> Image.Image:
    image = _open_header(data, max_pixels, what)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageException(f"the {what} file is truncated or corrupt") from exc
    # Clicks are given in the orientation the user sees, so honour EXIF rotation.
    return ImageOps.exif_transpose(image)


def _open_header(data: bytes, max_pixels: int, what: str) -> Image.Image:
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
    return image


@dataclass(frozen=True)
class DecodedImage:
    """An uploaded photo: what the models see, and what its output file must carry back."""

    rgb: np.ndarray  # HxWx3 uint8; transparent pixels shown on white, as a viewer shows them
    alpha: np.ndarray | None = None  # HxW uint8, when the upload had transparency
    colour: np.ndarray | None = None  # HxWx3 uint8: the stored colours under `alpha`
    icc_profile: bytes | None = None  # an RGB colour profile, carried into the output


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """An uploaded photo, its pixels as 8-bit RGB for the models."""
    image = _open_checked(data, max_pixels, "image")
    icc_profile = _rgb_profile(image.info.get("icc_profile"))
    image = _to_8_bits(image)
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        converted = image.convert("RGBA" if transparent else "RGB")
    except (ValueError, OSError) as exc:  # e.g. LAB TIFFs: Pillow has no conversion
        raise UnsupportedImageException(
            f"the image's colour mode {image.mode} cannot be converted to RGB"
        ) from exc
    pixels = np.asarray(converted, dtype=np.uint8)
    if not transparent:
        return DecodedImage(pixels.copy(), None, None, icc_profile)
    colour, alpha = pixels[..., :3].copy(), pixels[..., 3].copy()
    return DecodedImage(_on_white(colour, alpha), alpha, colour, icc_profile)


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight-alpha colours composited on white, rounded to the nearest value."""
    a = alpha.astype(np.uint32)[..., None]
    return ((colour.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _rgb_profile(profile: object) -> bytes | None:
    """The ICC profile when it describes RGB data; a grey or CMYK profile would be wrong on
    the RGB output, so it is dropped (Pillow's conversion to RGB does not use it either)."""
    if isinstance(profile, bytes) and len(profile) >= 20 and profile[16:20] == b"RGB ":
        return profile
    return None


def _to_8_bits(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float samples to 8 bits; Pillow's own conversion clips them to 255.

    16-bit integers (I;16*, and 32-bit I holding 0..65535) scale by 255/65535; floats must lie
    in [0, 1]. Pillow already reads 16-bit RGB(A) files as 8-bit by scaling.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        samples = np.asarray(image).astype(np.int64)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise UnsupportedImageException(
                "the image holds 32-bit integer samples outside 0..65535; send 8 or 16 bits "
                "per channel"
            )
        return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if image.mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        if not np.isfinite(samples).all() or samples.min() < 0.0 or samples.max() > 1.0:
            raise UnsupportedImageException(
                "the image holds floating-point samples outside [0, 1]; send 8 or 16 bits per "
                "channel, or floats in [0, 1]"
            )
        return Image.fromarray(np.rint(samples * 255).astype(np.uint8), mode="L")
    return image


def decode_mask_image(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded mask as its raw uint8 array (HxW, HxWx3 or HxWx4), for `binarize_mask`."""
    image = _open_checked(data, max_pixels, "mask")
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def encode_image(array: np.ndarray, output_format: str, icc_profile: bytes | None = None) -> bytes:
    """Encode an HxWx3, HxWx4 (RGBA) or HxW uint8 array as png, jpeg or webp."""
    buffer = io.BytesIO()
    options = dict(_SAVE_OPTIONS[output_format])
    if icc_profile is not None:
        options["icc_profile"] = icc_profile
    Image.fromarray(array).save(buffer, format=_PIL_FORMAT[output_format], **options)
    return buffer.getvalue()


def encode_result(
    source: DecodedImage, rgb: np.ndarray, region: np.ndarray, output_format: str
) -> bytes:
    """A flow's RGB result as the output file of `source`.

    Outside `region` (the regenerated pixels) the upload's alpha and stored colours come back
    bit-identical; inside it the new pixels are opaque, since they are newly painted. JPEG
    cannot hold alpha: it gets `rgb`, which is the image as shown on white. The upload's RGB
    ICC profile is embedded in every format.
    """
    pixels = rgb
    if source.alpha is not None and source.colour is not None and output_format != "jpeg":
        inside = np.asarray(region, dtype=bool)
        colour = np.where(inside[..., None], rgb, source.colour)
        alpha = np.where(inside, np.uint8(255), source.alpha)
        pixels = np.dstack([colour, alpha])
    return encode_image(pixels, output_format, source.icc_profile)


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# A 0/255 mask is long runs of two values: zlib's run-length strategy at level 1 packs it as
# tightly as the default strategy at level 3, in half the time.
_MASK_PNG_OPTIONS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]


def encode_mask_base64(mask: np.ndarray) -> str:
    """A bool mask as base64 8-bit grayscale PNG with 0/255 pixels."""
    encoded, png = cv2.imencode(".png", mask_to_png_array(mask), _MASK_PNG_OPTIONS)
    if not encoded:
        raise RuntimeError(f"OpenCV could not encode a {mask.shape} mask as PNG")
    return to_base64(png.tobytes())
