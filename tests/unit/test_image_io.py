"""Decoding refuses bad and oversized uploads before decoding pixels; encoding round-trips."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.crafted_images import png_header_only
from utils.exceptions import (
    ImageTooLargeException,
    InvalidImageException,
    UnsupportedImageException,
)
from utils.image_io import (
    DecodedImage,
    decode_image,
    decode_mask_image,
    encode_image,
    encode_mask_base64,
    encode_result,
    probe_image,
)


def _encoded(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_png_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    decoded = decode_image(encode_image(array, "png"), max_pixels=10_000).rgb
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_formats_encode_to_their_format(fmt: str) -> None:
    array = np.full((16, 24, 3), 120, np.uint8)
    data = encode_image(array, fmt)
    assert Image.open(io.BytesIO(data)).format == fmt.upper()
    assert np.abs(decode_image(data, 10_000).rgb.astype(int) - 120).max() <= 3


def test_grayscale_and_transparent_images_become_rgb_for_the_models() -> None:
    gray = decode_image(_encoded(np.full((4, 5), 77, np.uint8), "PNG"), 100)
    assert gray.rgb.shape == (4, 5, 3) and (gray.rgb == 77).all() and gray.alpha is None
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    assert (decode_image(_encoded(rgba, "PNG"), 100).rgb == 255).all()  # shown on white


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((10, 20, 3), np.uint8)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue(), 1000).rgb.shape == (20, 10, 3)


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


# --- decoding keeps what was sent ------------------------------------------------------------


def test_16_bit_grayscale_png_is_scaled_not_clipped() -> None:
    ramp = np.array([[0, 257, 4000, 32768, 65535]], np.uint16)
    decoded = decode_image(_encoded(ramp, "PNG"), 100)
    assert decoded.rgb[0, :, 0].tolist() == [0, 1, 16, 128, 255]
    assert (decoded.rgb == decoded.rgb[..., :1]).all()


def test_16_bit_rgb_png_is_scaled() -> None:
    import cv2

    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[...] = (60000, 4000, 300)
    ok, encoded = cv2.imencode(".png", rgb16[..., ::-1])
    assert ok
    decoded = decode_image(encoded.tobytes(), 100)
    np.testing.assert_allclose(decoded.rgb[0, 0], np.array([60000, 4000, 300]) / 257, atol=1)


def test_float_tiff_in_0_1_is_scaled_and_outside_is_refused() -> None:
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    decoded = decode_image(_encoded(values, "TIFF"), 100)
    assert decoded.rgb[0, :, 0].tolist() == [0, 64, 255]
    with pytest.raises(UnsupportedImageException, match=r"outside \[0, 1\]"):
        decode_image(_encoded(values * 4000, "TIFF"), 100)


def test_32_bit_integer_samples_beyond_16_bits_are_refused() -> None:
    values = np.array([[0, 70_000]], np.int32)
    with pytest.raises(UnsupportedImageException, match="0..65535"):
        decode_image(_encoded(values, "TIFF"), 100)


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_rgb_icc_profile_is_carried_into_the_output(fmt: str) -> None:
    profile = _srgb_profile()
    decoded = decode_image(_encoded(_noise(8, 8), "PNG", icc_profile=profile), 1000)
    assert decoded.icc_profile == profile
    region = np.zeros((8, 8), bool)
    output = Image.open(io.BytesIO(encode_result(decoded, decoded.rgb, region, fmt)))
    assert output.info.get("icc_profile") == profile


def test_a_profile_of_another_colour_space_is_not_put_on_rgb_output() -> None:
    from PIL import ImageCms

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    assert lab[16:20] != b"RGB "
    decoded = decode_image(_encoded(np.full((4, 4), 9, np.uint8), "PNG", icc_profile=lab), 100)
    assert decoded.icc_profile is None


def _rgba_upload() -> tuple[np.ndarray, bytes]:
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = _noise(6, 8)
    rgba[..., 3] = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5  # every alpha level differs
    return rgba, _encoded(rgba, "PNG")


def test_alpha_is_kept_apart_and_models_see_it_on_white() -> None:
    rgba, data = _rgba_upload()
    decoded = decode_image(data, 1000)
    np.testing.assert_array_equal(decoded.alpha, rgba[..., 3])
    np.testing.assert_array_equal(decoded.colour, rgba[..., :3])
    a = rgba[..., 3:].astype(float) / 255
    np.testing.assert_allclose(decoded.rgb, rgba[..., :3] * a + 255 * (1 - a), atol=0.51)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_rgba_comes_back_rgba_untouched_outside_the_region_and_opaque_inside(fmt: str) -> None:
    rgba, data = _rgba_upload()
    decoded = decode_image(data, 1000)
    region = np.zeros((6, 8), bool)
    region[2:4, 3:6] = True
    painted = decoded.rgb.copy()
    painted[region] = (10, 200, 30)
    output = np.asarray(Image.open(io.BytesIO(encode_result(decoded, painted, region, fmt))))
    assert output.shape == (6, 8, 4)
    np.testing.assert_array_equal(output[..., 3][~region], rgba[..., 3][~region])
    assert (output[..., 3][region] == 255).all()
    if fmt == "png":  # lossless: the colours too
        np.testing.assert_array_equal(output[..., :3][~region], rgba[..., :3][~region])
        assert (output[..., :3][region] == (10, 200, 30)).all()


def test_jpeg_output_of_an_rgba_upload_is_what_a_viewer_shows_on_white() -> None:
    _, data = _rgba_upload()
    decoded = decode_image(data, 1000)
    region = np.zeros((6, 8), bool)
    output = np.asarray(Image.open(io.BytesIO(encode_result(decoded, decoded.rgb, region, "jpeg"))))
    assert output.shape == (6, 8, 3)


def test_opaque_upload_output_is_the_flow_result() -> None:
    array = _noise(5, 7)
    decoded = DecodedImage(array)
    region = np.ones((5, 7), bool)
    output = Image.open(io.BytesIO(encode_result(decoded, array, region, "png")))
    assert output.mode == "RGB" and "icc_profile" not in output.info
    np.testing.assert_array_equal(np.asarray(output), array)


def test_cmyk_jpeg_becomes_rgb_and_its_cmyk_profile_is_not_carried() -> None:
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # red
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG", icc_profile=b"\0" * 16 + b"CMYK" + b"\0" * 108)
    decoded = decode_image(buffer.getvalue(), 100)
    assert decoded.rgb.shape == (3, 4, 3) and decoded.icc_profile is None
    assert decoded.rgb[..., 0].min() > 200 and decoded.rgb[..., 1:].max() < 60


def test_probe_reads_the_size_from_the_header_as_the_user_sees_it() -> None:

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 30 wide, 50 high
    Image.new("RGB", (50, 30), (1, 2, 3)).save(buffer, format="JPEG", exif=exif)
    data = buffer.getvalue()
    assert probe_image(data, 10_000) == (50, 30)
    assert decode_image(data, 10_000).rgb.shape[:2] == (50, 30)
    with pytest.raises(ImageTooLargeException):
        probe_image(data, 1000)
    with pytest.raises(InvalidImageException):
        probe_image(b"not an image", 10_000)
