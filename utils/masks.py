"""Mask primitives shared by every flow: dilation, bounding box, paste-back, conversions.

Masks are HxW bool arrays (True = the region); images are HxWx3 uint8 RGB arrays.
"""

from __future__ import annotations

import cv2
import numpy as np


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be a 2-D array, got shape {mask.shape}")
    return mask


def dilate_mask(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """Grow the mask with a square ones kernel of `kernel_size`, one iteration (Inpaint-Anything).

    A kernel of 0 or 1 leaves the mask unchanged. Returns a new bool array.
    """
    mask = _check_mask(mask)
    if kernel_size < 0:
        raise ValueError(f"kernel_size must be >= 0, got {kernel_size}")
    binary = mask.astype(bool)
    if kernel_size <= 1:
        return binary.copy()
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    return cv2.dilate(binary.astype(np.uint8), kernel, iterations=1).astype(bool)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the True pixels, x1/y1 exclusive; None when the mask is empty."""
    mask = _check_mask(mask).astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def paste_masked(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`generated` where `mask` is True, `original` elsewhere, as a new array.

    This is the server's invariant: every pixel outside the mask is bit-identical to `original`.
    """
    mask = _check_mask(mask).astype(bool)
    if original.shape != generated.shape:
        raise ValueError(f"shape mismatch: original {original.shape}, generated {generated.shape}")
    if original.dtype != generated.dtype:
        raise ValueError(f"dtype mismatch: original {original.dtype}, generated {generated.dtype}")
    if mask.shape != original.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {original.shape}")
    selector = mask if original.ndim == 2 else mask.reshape(mask.shape + (1,) * (original.ndim - 2))
    return np.where(selector, generated, original)


def invert_mask(mask: np.ndarray) -> np.ndarray:
    return ~_check_mask(mask).astype(bool)


def mask_to_png_array(mask: np.ndarray) -> np.ndarray:
    """uint8 HxW array, 255 in the region and 0 elsewhere (what a PNG mask holds)."""
    return _check_mask(mask).astype(bool).astype(np.uint8) * np.uint8(255)


def binarize_mask(array: np.ndarray) -> np.ndarray:
    """Turn a decoded mask upload into a bool mask: non-zero = region.

    - HxW (L), HxWx1, HxWx3 (RGB): a pixel is in the region if any channel is non-zero.
    - HxWx2 (LA), HxWx4 (RGBA): if the alpha channel varies across the image, it is what was
      painted (a stroke layer on a transparent background, whatever the stroke colour), so the
      region is alpha != 0. If alpha is one constant value (a fully opaque or fully transparent
      export), it carries nothing and the colour channels decide, as for RGB.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        return array != 0
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"a mask image must be HxW, HxWx1, HxWx2, HxWx3 or HxWx4: {array.shape}")
    channels = array.shape[2]
    if channels in (2, 4):
        alpha = array[..., -1]
        if alpha.size and alpha.min() != alpha.max():
            return alpha != 0
        array = array[..., :-1]
    return np.any(array != 0, axis=2)
