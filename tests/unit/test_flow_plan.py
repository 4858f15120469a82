"""The one inpainting plan keeps the invariant for every window; the geometry limits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flows.limits import check_aspect_ratio, check_fill_canvas
from flows.plan import Window, paint_region, region_to_paint
from utils.exceptions import ValidationException
from utils.windows import fill_canvas_pixels, plan_fill_window, plan_lama_region, plan_letterbox


def _image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)


def _region(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[height // 4 : height // 2, width // 3 : width // 2] = True
    return mask


async def _noise(part: np.ndarray, part_mask: np.ndarray) -> np.ndarray:
    assert part.shape[:2] == part_mask.shape
    return np.random.default_rng(1).integers(0, 256, part.shape, np.uint8)


WINDOWS = {
    "lama-full": lambda size, region: plan_lama_region(size, region, 2048, 16),
    "lama-crop": lambda size, region: plan_lama_region(size, region, 96, 8),
    "lama-downscale": lambda size, region: plan_lama_region(size, region, 40, 8),
    "fill-window": lambda size, region: plan_fill_window(size, region, 64),
    "letterbox": lambda size, region: plan_letterbox(size, 64),
}


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("keep_object", [False, True])
def test_pixels_outside_the_region_are_the_input_bit_for_bit(
    window: str, keep_object: bool
) -> None:
    image = _image(120, 200)
    region = asyncio.run(region_to_paint(_region(120, 200), 5, keep_object))
    plan: Window = WINDOWS[window](image.shape[:2], region)
    painted = asyncio.run(paint_region(image, region, plan, _noise))
    assert painted.image.shape == image.shape and painted.image.dtype == np.uint8
    np.testing.assert_array_equal(painted.image[~painted.region], image[~painted.region])
    assert (painted.image[painted.region] != image[painted.region]).any()


def test_replace_regenerates_everything_but_the_dilated_object() -> None:
    selection = _region(60, 80)
    region = asyncio.run(region_to_paint(selection, 3, keep_object=True))
    assert not region[selection].any() and region[0, 0]


def test_the_letterbox_paints_its_band_whatever_the_region() -> None:
    letterbox = plan_letterbox((40, 100), 64)
    _, mask = letterbox.extract(_image(40, 100), np.zeros((40, 100), bool))
    assert mask[0].all() and mask[-1].all() and not mask[32].any()


@pytest.mark.parametrize(("height", "width"), [(50, 2000), (300, 20), (1000, 800), (10, 10)])
def test_the_fill_canvas_bound_is_the_planned_canvas(height: int, width: int) -> None:
    mask = np.zeros((height, width), bool)
    mask[height // 2, width // 2] = True
    window = plan_fill_window((height, width), mask, 256)
    assert window.scaled_size[0] * window.scaled_size[1] == fill_canvas_pixels((height, width), 256)


def test_limits_refuse_thin_strips_and_huge_canvases() -> None:
    check_aspect_ratio(100, 10_000, 100)
    with pytest.raises(ValidationException, match="MAX_ASPECT_RATIO"):
        check_aspect_ratio(1, 3000, 100)
    check_fill_canvas(50, 2000, 256, 256 * 10_240)
    with pytest.raises(ValidationException, match="MAX_CANVAS_PIXELS"):
        check_fill_canvas(1, 1_000_000, 512, 40_000_000)
