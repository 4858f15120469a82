"""The entry's SAM geometry equals segment_anything's, bit for bit, without torch in the entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F

from tests.conftest import EXAMPLES_DIR
from utils.sam_frame import (
    _bilinear_rows,  # noqa: PLC2701 - the kernel itself is the subject
    to_working_image,
    upsample_masks,
    working_size,
)

SIZES = [(1, 2048), (3, 5000), (5, 20000), (600, 800), (1024, 1024), (1500, 700), (7, 9)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_working_size_is_resize_longest_side(height: int, width: int) -> None:
    assert working_size(height, width) == ResizeLongestSide.get_preprocess_shape(
        height, width, 1024
    )


@pytest.mark.parametrize("name", ["remove/dog.jpg", "fill/sample2.jpeg", "replace/man.jpeg"])
def test_working_image_is_resize_longest_side(name: str) -> None:
    from PIL import Image

    with Image.open(EXAMPLES_DIR / name) as photo:
        image = np.asarray(photo.convert("RGB"))
    np.testing.assert_array_equal(
        to_working_image(image), ResizeLongestSide(1024).apply_image(image)
    )


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((256, 256), (1024, 1024)),
        ((1024, 768), (4000, 3000)),
        ((683, 1024), (300, 450)),
        ((1, 1024), (3, 5000)),
        ((100, 1024), (101, 999)),
    ],
)
def test_bilinear_is_torch_interpolate_bit_for_bit(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    image = np.random.default_rng(sum(source)).normal(size=source).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(image)[None, None], target, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_array_equal(_bilinear_rows(image, target), expected)
    np.testing.assert_array_equal(_bilinear_rows(image, target, slice(1, 3)), expected[1:3])


@pytest.mark.parametrize(("height", "width"), [(1500, 700), (333, 1024), (40, 90), (3, 5000)])
def test_upsampled_masks_are_sam_postprocess_masks(height: int, width: int) -> None:
    logits = np.random.default_rng(height).normal(size=(3, 256, 256)).astype(np.float32)
    input_size = working_size(height, width)
    padded = F.interpolate(
        torch.from_numpy(logits)[None], (1024, 1024), mode="bilinear", align_corners=False
    )
    cropped = padded[..., : input_size[0], : input_size[1]]
    expected = F.interpolate(cropped, (height, width), mode="bilinear", align_corners=False)[0]
    np.testing.assert_array_equal(
        upsample_masks(logits, input_size, (height, width)), (expected > 0).numpy()
    )
