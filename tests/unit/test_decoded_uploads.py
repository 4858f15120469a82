"""The decoded-upload memo: a repeat of the same bytes skips decoding, within its budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from utils.decoded_uploads import DecodedUploads
from utils.exceptions import InvalidImageException
from utils.image_io import DecodedImage, decode_image


def _png(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class CountingDecoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> DecodedImage:
        self.calls += 1
        return decode_image(data, 10_000)


def test_the_same_bytes_decode_once_and_the_pixels_are_read_only() -> None:
    uploads, decoder = DecodedUploads(1 << 20), CountingDecoder()
    first = uploads.decode(_png(1), decoder)
    again = uploads.decode(_png(1), decoder)
    assert again is first and decoder.calls == 1
    np.testing.assert_array_equal(first.rgb, decode_image(_png(1), 10_000).rgb)
    with pytest.raises(ValueError, match="read-only"):
        first.rgb[0, 0] = 0
    other = uploads.decode(_png(2), decoder)
    assert decoder.calls == 2 and not np.array_equal(other.rgb, first.rgb)


def test_the_oldest_go_past_the_budget_and_a_too_big_image_is_not_kept() -> None:
    one_image = 16 * 16 * 3
    uploads, decoder = DecodedUploads(2 * one_image), CountingDecoder()
    for seed in (1, 2, 3):  # 1 is pushed out by 3
        uploads.decode(_png(seed), decoder)
    uploads.decode(_png(3), decoder)
    assert decoder.calls == 3
    uploads.decode(_png(1), decoder)
    assert decoder.calls == 4
    big = DecodedUploads(one_image - 1)
    image = big.decode(_png(4), decoder)
    assert big.decode(_png(4), decoder) is not image and not image.rgb.flags.writeable


def test_a_bad_file_is_refused_every_time() -> None:
    uploads, decoder = DecodedUploads(1 << 20), CountingDecoder()
    for _ in range(2):
        with pytest.raises(InvalidImageException):
            uploads.decode(b"not an image", decoder)
    assert decoder.calls == 2
