"""utils.windows: fill windows, letterbox, LaMa regions and point checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from utils.exceptions import EmptyMaskException
from utils.masks import mask_bbox, paste_masked
from utils.windows import (
    FillWindow,
    plan_fill_window,
    plan_lama_region,
    plan_letterbox,
    points_inside,
)


def _rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _random_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A few random rectangles and scattered pixels, sometimes touching the borders."""
    h, w = size
    mask = np.zeros(size, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        x0, x1 = np.sort(rng.integers(0, w + 1, size=2))
        y0, y1 = np.sort(rng.integers(0, h + 1, size=2))
        mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
    mask[rng.integers(0, h, size=3), rng.integers(0, w, size=3)] = True
    return mask


def _smooth_image(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(x / w * 2 * np.pi) * np.cos(y / h * np.pi)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).round().astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _assert_window_covers_mask(plan: FillWindow, mask: np.ndarray) -> None:
    c = plan.crop_size
    assert 0 <= plan.x <= plan.padded_size[1] - c
    assert 0 <= plan.y <= plan.padded_size[0] - c
    # The full extent of every masked pixel, not only its centre, lies inside the window.
    x0, y0, x1, y1 = mask_bbox(mask)
    left, top = plan.x - plan.pad_left, plan.y - plan.pad_top
    assert x0 * plan.scale_x >= left - 1e-9 and x1 * plan.scale_x <= left + c + 1e-9
    assert y0 * plan.scale_y >= top - 1e-9 and y1 * plan.scale_y <= top + c + 1e-9
    # And the window mask marks the window pixel under every masked pixel's centre.
    rows, cols = np.nonzero(mask)
    uv = plan.to_window(np.stack([cols, rows], axis=1))
    u, v = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
    assert u.min() >= 0 and v.min() >= 0 and u.max() < c and v.max() < c
    assert plan.crop_mask(mask)[v, u].all()


# Sizes the brief names: tiny, elongated both ways, exactly the window, larger than it.
EDGE_SIZES = [(10, 10), (50, 2000), (2000, 50), (1, 300), (64, 64), (64, 200), (300, 257)]


class TestFillWindow:
    @pytest.mark.parametrize("size", EDGE_SIZES)
    def test_random_masks_lie_inside_the_window(self, size: tuple[int, int]) -> None:
        rng = np.random.default_rng(sum(size))
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        for _ in range(15):
            mask = _random_mask(rng, size)
            plan = plan_fill_window(size, mask, 64)
            _assert_window_covers_mask(plan, mask)
        crop = plan.crop_image(image)
        assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
        window_mask = plan.crop_mask(mask)
        assert window_mask.shape == (64, 64) and window_mask.dtype == bool

    @pytest.mark.parametrize("size", EDGE_SIZES)
    def test_border_and_full_masks(self, size: tuple[int, int]) -> None:
        h, w = size
        masks = [
            np.ones(size, bool),  # the biggest bbox there is
            _rect_mask(size, (0, 0, 1, 1)),
            _rect_mask(size, (w - 1, h - 1, w, h)),
            _rect_mask(size, (0, h - 1, w, h)),  # a full-width line on the bottom row
            _rect_mask(size, (w - 1, 0, w, h)),  # a full-height line on the right column
        ]
        for mask in masks:
            _assert_window_covers_mask(plan_fill_window(size, mask, 64), mask)

    def test_realistic_sizes_with_a_512_window(self) -> None:
        rng = np.random.default_rng(7)
        for size in [(3000, 4000), (480, 640), (512, 2048), (100, 100)]:
            for _ in range(3):
                mask = _random_mask(rng, size)
                _assert_window_covers_mask(plan_fill_window(size, mask, 512), mask)

    def test_small_image_is_upscaled_so_the_short_side_is_the_window(self) -> None:
        plan = plan_fill_window((100, 150), _rect_mask((100, 150), (10, 10, 20, 20)), 512)
        assert plan.scaled_size == (512, 768)
        assert plan.padded_size == (512, 768) and plan.pad_top == plan.pad_left == 0

    def test_large_bbox_is_shrunk_to_fit(self) -> None:
        size = (1000, 1200)
        plan = plan_fill_window(size, _rect_mask(size, (100, 100, 1100, 900)), 512)
        assert plan.scale_x < 1 and plan.scale_y < 1
        assert 1000 * plan.scale_x <= 512
        assert abs(plan.scale_x - 510 / 1000) < 0.002

    def test_window_is_centred_on_the_bbox(self) -> None:
        size = (2000, 3000)
        plan = plan_fill_window(size, _rect_mask(size, (1400, 900, 1500, 1000)), 512)
        assert plan.scaled_size == size
        assert (plan.x, plan.y) == (1450 - 256, 950 - 256)

    def test_identity_window_restores_exactly(self) -> None:
        rng = np.random.default_rng(3)
        size = (512, 700)
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        mask = _rect_mask(size, (600, 200, 650, 260))
        plan = plan_fill_window(size, mask, 512)
        assert plan.scaled_size == size and plan.padded_size == size
        crop = plan.crop_image(image)
        np.testing.assert_array_equal(crop, image[:, plan.x : plan.x + 512])
        np.testing.assert_array_equal(plan.restore(crop, image), image)
        restored = plan.restore(np.zeros_like(crop), image)
        assert (restored[:, plan.x : plan.x + 512] == 0).all()
        np.testing.assert_array_equal(restored[:, : plan.x], image[:, : plan.x])

    @pytest.mark.parametrize(
        ("size", "box"),
        [
            ((40, 50), (5, 10, 30, 35)),  # enlarged
            ((300, 400), (20, 50, 250, 280)),  # shrunk
            ((20, 400), (0, 0, 300, 20)),  # shrunk, then reflect-padded vertically
            ((64, 90), (60, 3, 90, 40)),  # identity scale, window clamped at the right
            ((30, 700), (100, 0, 200, 30)),  # enlarged then shrunk, padded
        ],
    )
    def test_restore_puts_each_window_pixel_back_where_it_came_from(
        self, size: tuple[int, int], box: tuple[int, int, int, int]
    ) -> None:
        c = 64
        mask = _rect_mask(size, box)
        plan = plan_fill_window(size, mask, c)
        v, u = np.mgrid[0:c, 0:c]
        gradient = np.stack([4 * u, 4 * v, np.full_like(u, 128)], axis=-1).astype(np.uint8)
        original = np.zeros(size + (3,), np.uint8)
        restored = plan.restore(gradient, original)

        rows, cols = np.nonzero(mask)
        uv = plan.to_window(np.stack([cols, rows], axis=1))
        # Away from the window's rim, where the rescaled original blends in.
        rim = 2.5 / min(plan.scale_x, plan.scale_y, 1.0)
        inner = ((uv >= rim) & (uv <= c - 1 - rim)).all(axis=1)
        assert inner.sum() > 0.3 * len(uv)
        got = restored[rows[inner], cols[inner]].astype(np.float64)
        np.testing.assert_allclose(got[:, 0], 4 * uv[inner, 0], atol=2.5)
        np.testing.assert_allclose(got[:, 1], 4 * uv[inner, 1], atol=2.5)
        assert (restored[rows, cols, 2] > 0).all()  # every masked pixel got window content

    def test_restore_keeps_pixels_outside_the_window(self) -> None:
        rng = np.random.default_rng(4)
        size = (100, 900)  # upscaled: the rescaled original differs from the original
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        mask = _rect_mask(size, (700, 30, 760, 60))
        plan = plan_fill_window(size, mask, 128)
        assert plan.scale_x > 1
        restored = plan.restore(np.zeros((128, 128, 3), np.uint8), image)
        x0, _, x1, _ = plan.window_box()
        assert x1 - x0 == pytest.approx(128 / plan.scale_x)
        outside = np.ones(size, bool)
        outside[:, int(np.floor(x0)) : int(np.ceil(x1))] = False
        np.testing.assert_array_equal(restored[outside], image[outside])
        result = paste_masked(image, restored, mask)
        np.testing.assert_array_equal(result[~mask], image[~mask])
        assert (result[mask] == 0).all()

    def test_crop_image_does_not_alias_the_input(self) -> None:
        image = np.zeros((64, 64, 3), np.uint8)
        plan = plan_fill_window((64, 64), _rect_mask((64, 64), (1, 1, 5, 5)), 64)
        crop = plan.crop_image(image)
        crop[:] = 1
        assert image.max() == 0

    def test_empty_mask_and_bad_arguments(self) -> None:
        with pytest.raises(EmptyMaskException):
            plan_fill_window((10, 10), np.zeros((10, 10), bool), 64)
        with pytest.raises(ValueError):
            plan_fill_window((10, 10), np.ones((10, 11), bool), 64)
        with pytest.raises(ValueError):
            plan_fill_window((10, 10), np.ones((10, 10), bool), 4)
        plan = plan_fill_window((10, 10), np.ones((10, 10), bool), 64)
        with pytest.raises(ValueError):
            plan.restore(np.zeros((32, 32, 3), np.uint8), np.zeros((10, 10, 3), np.uint8))
        with pytest.raises(ValueError):
            plan.crop_image(np.zeros((10, 12, 3), np.uint8))


class TestLetterbox:
    @pytest.mark.parametrize(
        ("size", "resized", "top", "left"),
        [
            ((300, 1000), (153, 512), 179, 0),
            ((1000, 300), (512, 153), 0, 179),
            ((512, 512), (512, 512), 0, 0),
            ((200, 300), (341, 512), 85, 0),
            ((7, 2000), (1, 512), 255, 0),
        ],
    )
    def test_sizes_and_offsets_follow_inpaint_anything(
        self, size: tuple[int, int], resized: tuple[int, int], top: int, left: int
    ) -> None:
        plan = plan_letterbox(size, 512)
        assert plan.resized_size == resized
        assert (plan.pad_top, plan.pad_left) == (top, left)
        assert plan.pad_top + plan.resized_size[0] + plan.pad_bottom == 512
        assert plan.pad_left + plan.resized_size[1] + plan.pad_right == 512
        # Inpaint-Anything's resize_and_pad, where it does not lose a pixel to float error.
        scale = 512 / max(size)
        ia = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
        assert ia == resized
        assert (top, left) == ((512 - ia[0]) // 2, (512 - ia[1]) // 2)

    def test_apply_image_places_the_resized_image_and_mirrors_the_band(self) -> None:
        image = _smooth_image((300, 1000))
        plan = plan_letterbox((300, 1000), 512)
        boxed = plan.apply_image(image)
        assert boxed.shape == (512, 512, 3) and boxed.dtype == np.uint8
        inner = boxed[179 : 179 + 153]
        np.testing.assert_array_equal(
            inner, cv2.resize(image, (512, 153), interpolation=cv2.INTER_AREA)
        )
        np.testing.assert_array_equal(boxed[178], inner[1])  # reflect, edge not repeated

    def test_apply_mask_pads_with_background(self) -> None:
        mask = np.ones((300, 1000), bool)
        boxed = plan_letterbox((300, 1000), 512).apply_mask(mask)
        assert boxed.shape == (512, 512) and boxed.dtype == bool
        assert boxed[179 : 179 + 153].all()
        assert not boxed[:179].any() and not boxed[179 + 153 :].any()

    def test_apply_mask_is_nearest(self) -> None:
        mask = _rect_mask((100, 200), (50, 20, 150, 80))
        boxed = plan_letterbox((100, 200), 400).apply_mask(mask)
        assert mask_bbox(boxed) == (100, 140, 300, 260)
        assert boxed.sum() == 200 * 120

    @pytest.mark.parametrize("size", [(700, 1000), (200, 300), (1024, 600)])
    def test_round_trip_is_close_on_a_smooth_image(self, size: tuple[int, int]) -> None:
        image = _smooth_image(size)
        plan = plan_letterbox(size, 512)
        restored = plan.restore(plan.apply_image(image))
        assert restored.shape == image.shape and restored.dtype == np.uint8
        assert _psnr(restored, image) > 30

    def test_restore_rejects_wrong_sizes(self) -> None:
        plan = plan_letterbox((300, 1000), 512)
        with pytest.raises(ValueError):
            plan.restore(np.zeros((256, 256, 3), np.uint8))


class TestLamaRegion:
    def test_small_image_is_used_whole(self) -> None:
        mask = _rect_mask((600, 800), (10, 10, 20, 20))
        region = plan_lama_region((600, 800), mask, 1024, 64)
        assert region.kind == "full"
        assert region.box == (0, 0, 800, 600) and region.part_size == (600, 800)
        image = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
        part, mask_part = region.extract(image, mask)
        np.testing.assert_array_equal(part, image)
        np.testing.assert_array_equal(mask_part, mask)
        np.testing.assert_array_equal(region.restore(part, image), image)

    def test_small_mask_on_a_large_image_is_cropped(self) -> None:
        size = (1500, 2000)
        mask = _rect_mask(size, (1900, 30, 1980, 100))
        region = plan_lama_region(size, mask, 1024, 64)
        assert region.kind == "crop"
        assert region.box == (1836, 0, 2000, 164) and region.part_size == (164, 164)
        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        part, mask_part = region.extract(image, mask)
        np.testing.assert_array_equal(part, image[0:164, 1836:2000])
        assert mask_part.sum() == mask.sum()
        result = rng.integers(0, 256, part.shape, dtype=np.uint8)
        restored = region.restore(result, image)
        np.testing.assert_array_equal(restored[0:164, 1836:2000], result)
        restored[0:164, 1836:2000] = image[0:164, 1836:2000]
        np.testing.assert_array_equal(restored, image)

    def test_large_mask_on_a_large_image_is_downscaled(self) -> None:
        size = (1500, 2000)
        mask = _rect_mask(size, (100, 100, 1900, 400))
        region = plan_lama_region(size, mask, 1024, 64)
        assert region.kind == "downscale"
        assert region.box == (0, 0, 2000, 1500) and region.part_size == (768, 1024)
        image = _smooth_image(size)
        part, mask_part = region.extract(image, mask)
        assert part.shape == (768, 1024, 3) and mask_part.shape == (768, 1024)
        restored = region.restore(part, image)
        assert restored.shape == image.shape and _psnr(restored, image) > 30

    def test_crop_limit_includes_the_margin(self) -> None:
        size = (1500, 2000)
        fits = plan_lama_region(size, _rect_mask(size, (500, 500, 1396, 600)), 1024, 64)
        too_big = plan_lama_region(size, _rect_mask(size, (500, 500, 1397, 600)), 1024, 64)
        assert (fits.kind, too_big.kind) == ("crop", "downscale")

    @pytest.mark.parametrize("size", [(1500, 2000), (333, 1777), (2000, 90)])
    def test_downscaled_mask_covers_every_masked_pixel_without_leaking(
        self, size: tuple[int, int]
    ) -> None:
        rng = np.random.default_rng(size[0])
        for _ in range(4):
            mask = _random_mask(rng, size)
            mask |= _rect_mask(size, (0, 0, size[1], 1))  # a 1-pixel line, and a huge bbox
            region = plan_lama_region(size, mask, 256, 16)
            assert region.kind == "downscale"
            image = np.zeros(size + (3,), np.uint8)
            part, mask_part = region.extract(image, mask)
            back = cv2.resize(
                mask_part.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST_EXACT
            )
            assert back[mask].all()
            # LaMa's composite: inpainted (here 255) in the hole, the input elsewhere. The
            # upscaled result must show no pre-inpainting pixel at any masked original pixel.
            inpainted = np.where(mask_part[..., None], np.uint8(255), part)
            restored = region.restore(inpainted, image)
            assert (restored[mask] == 255).all()

    def test_empty_mask_and_bad_arguments(self) -> None:
        with pytest.raises(EmptyMaskException):
            plan_lama_region((10, 10), np.zeros((10, 10), bool), 8, 2)
        with pytest.raises(ValueError):
            plan_lama_region((10, 10), np.ones((10, 10), bool), 8, -1)
        region = plan_lama_region((10, 10), np.ones((10, 10), bool), 8, 2)
        with pytest.raises(ValueError):
            region.restore(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8))


class TestPoints:
    def test_points_inside(self) -> None:
        points = [[0, 0], [99, 49], [100, 0], [-1, 5], [99.5, 49.5], [5, 50], [float("nan"), 1]]
        np.testing.assert_array_equal(
            points_inside(points, (50, 100)), [True, True, False, False, True, False, False]
        )

    def test_a_single_point_is_accepted(self) -> None:
        np.testing.assert_array_equal(points_inside([3, 4], (10, 10)), [True])
        np.testing.assert_array_equal(points_inside(np.array([3, 10]), (10, 10)), [False])

    def test_malformed_points_are_rejected(self) -> None:
        with pytest.raises(ValueError):
            points_inside([[1, 2, 3]], (10, 10))
        with pytest.raises(ValueError):
            points_inside([1, 2, 3], (10, 10))
