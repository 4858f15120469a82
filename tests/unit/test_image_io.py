"""Decoding refuses bad and oversized uploads before decoding pixels; encoding round-trips."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.crafted_images import png_header_only
from utils.exceptions import ImageTooLargeException, InvalidImageException
from utils.image_io import decode_image, decode_mask_image, encode_image, encode_mask_base64


def _encoded(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_png_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    decoded = decode_image(encode_image(array, "png"), max_pixels=10_000)
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_formats_encode_to_their_format(fmt: str) -> None:
    array = np.full((16, 24, 3), 120, np.uint8)
    data = encode_image(array, fmt)
    assert Image.open(io.BytesIO(data)).format == fmt.upper()
    assert np.abs(decode_image(data, 10_000).astype(int) - 120).max() <= 3


def test_grayscale_and_transparent_images_become_rgb() -> None:
    gray = decode_image(_encoded(np.full((4, 5), 77, np.uint8), "PNG"), 100)
    assert gray.shape == (4, 5, 3) and (gray == 77).all()
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    assert (decode_image(_encoded(rgba, "PNG"), 100) == 255).all()  # shown on white


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((10, 20, 3), np.uint8)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue(), 1000).shape == (20, 10, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a readable image"),
        (_encoded(_noise(64, 64), "PNG")[:4000], "truncated or corrupt"),
        (_encoded(np.zeros((8, 8, 3), np.uint8), "GIF"), "accepted formats"),
    ],
)
def test_undecodable_uploads_are_invalid_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageException, match=message):
        decode_image(data, max_pixels=10_000)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # Declared sizes whose pixels are not even in the file: only the header is read.
    with pytest.raises(ImageTooLargeException, match="8000x6000"):
        decode_image(png_header_only(8000, 6000), max_pixels=40_000_000)
    # 100k x 100k (30 GB decoded) trips Pillow's own bomb check first: still a 413.
    with pytest.raises(ImageTooLargeException, match="more than 40000000 pixels"):
        decode_image(png_header_only(100_000, 100_000), max_pixels=40_000_000)


def test_mask_keeps_its_channels_for_binarisation() -> None:
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert decode_mask_image(_encoded(rgba, "PNG"), 100).shape == (3, 4, 4)
    assert decode_mask_image(_encoded(np.zeros((3, 4), np.uint8), "PNG"), 100).shape == (3, 4)


def test_mask_base64_is_a_0_255_png() -> None:
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encode_mask_base64(mask)))))
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 4)
    assert set(np.unique(decoded)) == {0, 255}
    assert decoded[1, 2] == 255 and decoded.sum() == 255
