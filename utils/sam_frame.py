"""SAM's working frame, computed in the entry without torch.

The entry sends SAM only the photo at its working size (long side 1024, as segment_anything's
`ResizeLongestSide`) and gets back the decoder's low-resolution logits (Kx256x256 float32); it
upsamples them itself, exactly as `Sam.postprocess_masks` does: bilinear to 1024x1024, crop the
input size, bilinear to the original size, threshold at 0. So no full-resolution array crosses a
process boundary, and the masks are the reference's, bit for bit.

`F.interpolate(mode="bilinear", align_corners=False)` on the CPU (float32) computes each source
index as fma(scale, dst + 0.5, -0.5) and each output as fma(a, wa, b * wb), width first, then
height; `_bilinear_rows` does the same (an fp32 fma is exact when done in float64, since the
product of two float32 fits a float64). tests/unit/test_sam_frame.py checks this against torch.
Working row band by row band keeps the memory of a 36-MP mask at a few MB beyond the result.
(torch itself is ~2.4x faster here, but importing it costs the entry ~480 MB of RSS.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

SAM_IMAGE_SIZE = 1024  # the image encoder's input side (every SAM variant)
_BAND_ROWS = 256


def working_size(height: int, width: int, long_side: int = SAM_IMAGE_SIZE) -> tuple[int, int]:
    """ResizeLongestSide.get_preprocess_shape: both sides scaled so the long one is `long_side`
    (a side can round to 0 for strips thinner than 1:2048; callers refuse those first)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_working_image(image: np.ndarray, long_side: int = SAM_IMAGE_SIZE) -> np.ndarray:
    """The HxWx3 uint8 photo at SAM's working size: PIL's bilinear resize, which is what
    ResizeLongestSide.apply_image runs (torchvision's resize of a PIL image)."""
    height, width = working_size(*image.shape[:2], long_side=long_side)
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * b.astype(np.float64) + c).astype(np.float32)


def _source(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, lambda0, lambda1) of each output position along one axis."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    real = np.maximum(_fma(np.full(n_out, scale, np.float32), dst, np.float64(-0.5)), 0)
    index0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    index1 = np.where(index0 < n_in - 1, index0 + 1, index0)
    lambda1 = np.clip(real - index0.astype(np.float32), 0, 1).astype(np.float32)
    return index0, index1, (np.float32(1) - lambda1).astype(np.float32), lambda1


Axis = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _axis(
    n_in: int,
    n_out: int,
    select: slice | np.ndarray | None = None,
    remap: np.ndarray | None = None,
) -> Axis:
    """`_source` for the output positions `select`, with source indices mapped by `remap`."""
    index0, index1, lambda0, lambda1 = _source(n_in, n_out)
    if select is not None:
        index0, index1, lambda0, lambda1 = (a[select] for a in (index0, index1, lambda0, lambda1))
    if remap is not None:
        index0, index1 = remap[index0], remap[index1]
    return index0, index1, lambda0, lambda1


def _interpolate(image: np.ndarray, rows: Axis, cols: Axis) -> np.ndarray:
    """torch's bilinear kernel: width first, then height, each output an fp32 fma."""
    r0, r1, h0, h1 = rows
    c0, c1, w0, w1 = cols
    needed = np.union1d(r0, r1)
    lookup = np.searchsorted(needed, [r0, r1])
    source = image[needed]
    shape = (len(needed), len(c0))
    horizontal = _fma(source[:, c0], np.broadcast_to(w0, shape), source[:, c1] * w1)
    top, bottom = horizontal[lookup[0]], horizontal[lookup[1]]
    return _fma(top, np.broadcast_to(h0[:, None], top.shape), bottom * h1[:, None])


def _bilinear_rows(
    image: np.ndarray, size: tuple[int, int], rows: slice | np.ndarray | None = None
) -> np.ndarray:
    """Rows `rows` of `F.interpolate(image, size, mode="bilinear", align_corners=False)` for an
    HxW float32 array."""
    return _interpolate(image, _axis(image.shape[0], size[0], rows), _axis(image.shape[1], size[1]))


def upsample_masks(
    low_res: np.ndarray,
    input_size: Sequence[int],
    original_size: Sequence[int],
    threshold: float = 0.0,
) -> np.ndarray:
    """KxHxW bool masks from SAM's Kx256x256 logits (Sam.postprocess_masks, then > threshold).

    Of the 1024x1024 upsampling only the cells that the second resize reads are computed (they
    lie in the crop; a photo smaller than the working size reads fewer still), each exactly as
    torch computes it, so the result is unchanged.
    """
    height, width = int(original_size[0]), int(original_size[1])
    input_h, input_w = int(input_size[0]), int(input_size[1])
    rows = np.union1d(*_source(input_h, height)[:2])
    cols = np.union1d(*_source(input_w, width)[:2])
    row_at = np.full(input_h, -1)
    row_at[rows] = np.arange(len(rows))
    col_at = np.full(input_w, -1)
    col_at[cols] = np.arange(len(cols))
    first_rows = _axis(low_res.shape[1], SAM_IMAGE_SIZE, rows)
    first_cols = _axis(low_res.shape[2], SAM_IMAGE_SIZE, cols)
    second_cols = _axis(input_w, width, remap=col_at)
    masks = np.empty((low_res.shape[0], height, width), dtype=bool)
    for k, logits in enumerate(np.asarray(low_res, dtype=np.float32)):
        compact = _interpolate(logits, first_rows, first_cols)
        for start in range(0, height, _BAND_ROWS):
            band = slice(start, min(height, start + _BAND_ROWS))
            second_rows = _axis(input_h, height, band, row_at)
            masks[k, band] = _interpolate(compact, second_rows, second_cols) > threshold
    return masks
