"""utils.masks: dilation, bbox, paste-back invariant, conversions, mask uploads."""

from __future__ import annotations

import numpy as np
import pytest

from utils.masks import (
    binarize_mask,
    dilate_mask,
    invert_mask,
    mask_bbox,
    mask_to_png_array,
    paste_masked,
)


def _single_pixel(shape: tuple[int, int], row: int, col: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[row, col] = True
    return mask


def _reference_dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Square max filter written out by hand (odd k: the kernel is centred)."""
    r = k // 2
    padded = np.pad(mask, r, mode="constant")
    out = np.zeros_like(mask)
    for dy in range(k):
        for dx in range(k):
            out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


class TestDilateMask:
    def test_single_pixel_k3_is_a_3x3_block(self) -> None:
        result = dilate_mask(_single_pixel((7, 7), 3, 4), 3)
        expected = np.zeros((7, 7), dtype=bool)
        expected[2:5, 3:6] = True
        assert result.dtype == bool
        np.testing.assert_array_equal(result, expected)

    def test_k15_grows_bbox_by_7_each_side(self) -> None:
        result = dilate_mask(_single_pixel((50, 60), 20, 30), 15)
        assert mask_bbox(result) == (23, 13, 38, 28)
        assert result.sum() == 15 * 15

    def test_k15_is_clipped_at_the_borders(self) -> None:
        result = dilate_mask(_single_pixel((50, 60), 2, 1), 15)
        assert mask_bbox(result) == (0, 0, 9, 10)
        assert result.sum() == 9 * 10

    @pytest.mark.parametrize("k", [3, 5, 9])
    def test_matches_a_hand_written_max_filter(self, k: int) -> None:
        rng = np.random.default_rng(k)
        mask = rng.random((40, 33)) > 0.97
        np.testing.assert_array_equal(dilate_mask(mask, k), _reference_dilate(mask, k))

    @pytest.mark.parametrize("k", [0, 1])
    def test_kernel_0_or_1_leaves_the_mask_unchanged(self, k: int) -> None:
        mask = np.random.default_rng(0).random((20, 30)) > 0.5
        result = dilate_mask(mask, k)
        np.testing.assert_array_equal(result, mask)
        assert result is not mask

    def test_accepts_uint8_masks(self) -> None:
        mask = _single_pixel((5, 5), 2, 2).astype(np.uint8) * 255
        assert dilate_mask(mask, 3).sum() == 9

    def test_negative_kernel_is_rejected(self) -> None:
        with pytest.raises(ValueError):
            dilate_mask(np.zeros((4, 4), bool), -1)

    def test_non_2d_mask_is_rejected(self) -> None:
        with pytest.raises(ValueError):
            dilate_mask(np.zeros((4, 4, 3), bool), 3)


class TestMaskBbox:
    def test_empty_mask_has_no_bbox(self) -> None:
        assert mask_bbox(np.zeros((10, 10), bool)) is None

    def test_single_pixel_bbox_is_exclusive(self) -> None:
        assert mask_bbox(_single_pixel((10, 12), 3, 7)) == (7, 3, 8, 4)

    def test_random_masks_match_argwhere(self) -> None:
        rng = np.random.default_rng(1)
        for _ in range(20):
            mask = rng.random((rng.integers(1, 40), rng.integers(1, 40))) > 0.9
            if not mask.any():
                continue
            rows, cols = np.nonzero(mask)
            expected = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert mask_bbox(mask) == expected

    def test_full_mask(self) -> None:
        assert mask_bbox(np.ones((5, 9), bool)) == (0, 0, 9, 5)


class TestPasteMasked:
    def test_unmasked_pixels_are_bit_identical_to_the_original(self) -> None:
        rng = np.random.default_rng(2)
        for _ in range(10):
            h, w = rng.integers(1, 64, size=2)
            original = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            generated = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            mask = rng.random((h, w)) > 0.6
            before = original.copy()
            result = paste_masked(original, generated, mask)
            assert result.dtype == np.uint8 and result.shape == original.shape
            np.testing.assert_array_equal(result[~mask], original[~mask])
            np.testing.assert_array_equal(result[mask], generated[mask])
            np.testing.assert_array_equal(original, before)
            assert result is not original and result is not generated

    def test_grayscale_images(self) -> None:
        original = np.zeros((4, 4), np.uint8)
        generated = np.full((4, 4), 9, np.uint8)
        mask = _single_pixel((4, 4), 1, 2)
        result = paste_masked(original, generated, mask)
        assert result.sum() == 9 and result[1, 2] == 9

    def test_shape_mismatches_are_rejected(self) -> None:
        image = np.zeros((4, 5, 3), np.uint8)
        with pytest.raises(ValueError):
            paste_masked(image, np.zeros((5, 4, 3), np.uint8), np.zeros((4, 5), bool))
        with pytest.raises(ValueError):
            paste_masked(image, image.copy(), np.zeros((5, 4), bool))
        with pytest.raises(ValueError):
            paste_masked(image, image.astype(np.float32), np.zeros((4, 5), bool))


def test_invert_mask() -> None:
    mask = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(invert_mask(mask), ~mask)
    np.testing.assert_array_equal(invert_mask(mask.astype(np.uint8) * 255), ~mask)


def test_mask_to_png_array() -> None:
    png = mask_to_png_array(np.array([[True, False]]))
    assert png.dtype == np.uint8
    np.testing.assert_array_equal(png, [[255, 0]])


class TestBinarizeMask:
    def test_grayscale_nonzero_is_region(self) -> None:
        np.testing.assert_array_equal(
            binarize_mask(np.array([[0, 1], [255, 0]], np.uint8)), [[False, True], [True, False]]
        )

    def test_single_channel_axis(self) -> None:
        array = np.array([[[0], [3]]], np.uint8)
        np.testing.assert_array_equal(binarize_mask(array), [[False, True]])

    def test_rgb_any_channel_nonzero(self) -> None:
        array = np.zeros((2, 2, 3), np.uint8)
        array[0, 0] = (255, 0, 0)
        array[1, 1] = (0, 0, 1)
        np.testing.assert_array_equal(binarize_mask(array), [[True, False], [False, True]])

    def test_opaque_rgba_uses_colour(self) -> None:
        array = np.zeros((2, 2, 4), np.uint8)
        array[..., 3] = 255
        array[0, 1, :3] = 255
        np.testing.assert_array_equal(binarize_mask(array), [[False, True], [False, False]])

    def test_black_strokes_on_transparent_white_use_alpha(self) -> None:
        array = np.full((2, 2, 4), 255, np.uint8)
        array[..., 3] = 0
        array[1, 0] = (0, 0, 0, 255)
        np.testing.assert_array_equal(binarize_mask(array), [[False, False], [True, False]])

    def test_white_strokes_on_transparent_black(self) -> None:
        array = np.zeros((2, 2, 4), np.uint8)
        array[0, 0] = (255, 255, 255, 255)
        array[1, 1] = (255, 255, 255, 128)  # anti-aliased edge: still the region
        np.testing.assert_array_equal(binarize_mask(array), [[True, False], [False, True]])

    def test_gray_alpha(self) -> None:
        array = np.zeros((1, 2, 2), np.uint8)
        array[0, 1] = (0, 255)
        np.testing.assert_array_equal(binarize_mask(array), [[False, True]])

    @pytest.mark.parametrize("shape", [(2, 2, 5), (2,), (1, 2, 2, 3)])
    def test_bad_shapes_are_rejected(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(ValueError):
            binarize_mask(np.zeros(shape, np.uint8))
