"""SAM's frame, in one place, without torch: what segment_anything's `SamPredictor` does to a
photo and its prompts before the model, and to the logits after it.

- `to_working_image`: the resize (long side 1024, `ResizeLongestSide.apply_image`), in the entry.
- `to_model_input`: normalise and pad to 1024x1024 (`Sam.preprocess`), in the SAM runner.
- `to_input_coords`, `to_input_box`: prompts in the working frame (`apply_coords`, `apply_boxes`).
- `upsample_masks`: the logits back to masks of the photo (`Sam.postprocess_masks`), in the entry.

The entry sends SAM only the photo at its working size and gets back the decoder's
low-resolution logits (Kx256x256 float32); it upsamples them itself, exactly as
`Sam.postprocess_masks` does: bilinear to 1024x1024, crop the input size, bilinear to the
original size, threshold at 0. So no full-resolution array crosses a process boundary, and the
masks are the reference's, bit for bit.

`F.interpolate(mode="bilinear", align_corners=False)` on the CPU (float32) computes each source
index as fma(scale, dst + 0.5, -0.5) and each output as fma(a, wa, b * wb), width first, then
height; `_bilinear_rows` and `_bilinear_at` do the same (an fp32 fma is exact when done in
float64, since the product of two float32 fits a float64). That is ~10x slower than torch, and
only the sign matters, so `upsample_masks` first runs OpenCV's bilinear resizes (the same
half-pixel mapping, but float32 coordinates and plain multiply-adds), whose values lie within a
small bound of torch's (see `_SLACK`), and recomputes torch's way only the pixels within that
bound of the threshold; a band where too many are (noise-like logits) is computed torch's way
throughout. tests/unit/test_sam_frame.py checks all of it against torch. Working row band by row
band keeps the memory of a 36-MP mask at a few MB beyond the result (plus up to ~7 MB of scratch
kept for the next call); importing torch would cost the entry ~480 MB of RSS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import cv2
import numpy as np
from PIL import Image

SAM_IMAGE_SIZE = 1024  # the image encoder's input side (every SAM variant)
# Sam.pixel_mean and Sam.pixel_std: the same for every released SAM checkpoint.
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
_BAND_PIXELS = 1 << 19  # output pixels worked on at once, with ~6 bytes of scratch each
# Both resizes are convex combinations of the logits, so OpenCV's value differs from torch's only
# by float32 rounding of the sums (< 1e-6 * max|logit|) and by its source coordinates, which round
# differently: at most 2^-21 * n_in apart per axis, each moving the value by at most that times
# the largest step between neighbours (2 * max|logit|). Over both axes of both resizes (n_in 256,
# then <= 1024) that is < 2.5e-3 * max|logit| (the worst measured over random sizes and +-1
# checkerboards: 6.4e-5), so a pixel further than _SLACK * max|logit| from the threshold is
# decided by the approximation with a margin of 4x on the bound.
_SLACK = 1e-2
_UNDERFLOW = 8 * float(np.finfo(np.float32).tiny)  # roundings near 0, even if flushed to zero
# Recomputing a pixel costs ~115 ns from the logits, ~28 ns from the exact first resize of the
# whole crop (~5 ns a cell), ~10 ns a pixel when a whole band is computed from it.
_WHOLE_FIRST = 16  # so once 1/16 as many pixels as crop cells are recomputed, do that resize
_EXACT_SHARE = 0.25  # and compute a band torch's way throughout when more of it is near
_CHUNK = 1 << 15  # elements per step of the exact kernels: their temporaries stay in cache


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


def to_model_input(working: np.ndarray, side: int = SAM_IMAGE_SIZE) -> np.ndarray:
    """The 3xSxS float32 encoder input of an hxwx3 uint8 working image: Sam.preprocess, i.e.
    (pixel - mean) / std in float32 (the same IEEE operations as torch's, so bit-identical),
    then zero padding at the bottom and right."""
    height, width = working.shape[:2]
    if max(height, width) > side:
        raise ValueError(f"a {width}x{height} image does not fit SAM's {side}x{side} input")
    normalised = (working.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    padded = np.zeros((3, side, side), dtype=np.float32)
    padded[:, :height, :width] = normalised.transpose(2, 0, 1)
    return padded


def to_input_coords(
    points: np.ndarray | Sequence[Sequence[float]], original_size: Sequence[int]
) -> np.ndarray:
    """Nx2 [x, y] points of the photo in the working frame (ResizeLongestSide.apply_coords)."""
    old_h, old_w = int(original_size[0]), int(original_size[1])
    new_h, new_w = working_size(old_h, old_w)
    coords = np.array(points, dtype=float)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def to_input_box(box: np.ndarray | Sequence[float], original_size: Sequence[int]) -> np.ndarray:
    """A [x0, y0, x1, y1] box in the working frame, as 1x4 (ResizeLongestSide.apply_boxes)."""
    corners = to_input_coords(np.asarray(box, dtype=float).reshape(-1, 2, 2), original_size)
    return corners.reshape(-1, 4)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * b.astype(np.float64) + c).astype(np.float32)


Axis = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _source(n_in: int, n_out: int) -> Axis:
    """(index0, index1, lambda0, lambda1) of each output position along one axis."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    real = np.maximum(_fma(np.full(n_out, scale, np.float32), dst, np.float64(-0.5)), 0)
    index0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    index1 = np.where(index0 < n_in - 1, index0 + 1, index0)
    lambda1 = np.clip(real - index0.astype(np.float32), 0, 1).astype(np.float32)
    return index0, index1, (np.float32(1) - lambda1).astype(np.float32), lambda1


def _remap(axis: Axis, index: np.ndarray) -> Axis:
    """`axis` with its source indices mapped through `index`."""
    return index[axis[0]], index[axis[1]], axis[2], axis[3]


def _axis(n_in: int, n_out: int, select: slice | np.ndarray | None = None) -> Axis:
    """`_source` for the output positions `select`."""
    axis = _source(n_in, n_out)
    return axis if select is None else tuple(a[select] for a in axis)


def _interpolate(image: np.ndarray, rows: Axis, cols: Axis) -> np.ndarray:
    """torch's bilinear kernel: width first, then height, each output an fp32 fma."""
    r0, r1, h0, h1 = rows
    c0, c1, w0, w1 = cols
    needed = np.union1d(r0, r1)
    top, bottom = np.searchsorted(needed, [r0, r1])
    step = max(1, _CHUNK // len(c0))
    horizontal = np.empty((len(needed), len(c0)), dtype=np.float32)
    for start in range(0, len(needed), step):
        source = image[needed[start : start + step]]
        horizontal[start : start + step] = _fma(source[:, c0], w0, source[:, c1] * w1)
    out = np.empty((len(r0), len(c0)), dtype=np.float32)
    for start in range(0, len(out), step):
        part = slice(start, start + step)
        lower = horizontal[bottom[part]] * h1[part, None]
        out[part] = _fma(horizontal[top[part]], h0[part, None], lower)
    return out


def _bilinear_rows(
    image: np.ndarray, size: tuple[int, int], rows: slice | np.ndarray | None = None
) -> np.ndarray:
    """Rows `rows` of `F.interpolate(image, size, mode="bilinear", align_corners=False)` for an
    HxW float32 array."""
    return _interpolate(image, _axis(image.shape[0], size[0], rows), _axis(image.shape[1], size[1]))


def _bilinear_at(
    read: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rows: Axis,
    cols: Axis,
    ys: np.ndarray,
    xs: np.ndarray,
) -> np.ndarray:
    """torch's bilinear kernel at the output pixels (ys, xs) only, reading the input's cells
    through `read(rows, cols)`."""
    r0, r1, h0, h1 = (a[ys] for a in rows)
    c0, c1, w0, w1 = (a[xs] for a in cols)
    corners = read(np.concatenate((r0, r0, r1, r1)), np.concatenate((c0, c1, c0, c1)))
    a, b, c, d = corners.reshape(4, -1)
    return _fma(_fma(a, w0, b * w1), h0, _fma(c, w0, d * w1) * h1)


def _read(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return image.take(rows * image.shape[1] + cols)


class _Scratch:
    """Buffers kept between calls: fresh megabytes would be faulted in on every request."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
        size = math.prod(shape) * np.dtype(dtype).itemsize
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer[:size].view(dtype).reshape(shape)


_spare: list[_Scratch] = []  # normally one; list.pop and append are atomic across threads


class _Frame:
    """One upsampling's geometry: torch's source indices and weights along each axis."""

    def __init__(
        self, low_size: tuple[int, int], input_size: tuple[int, int], size: tuple[int, int]
    ):
        self.height, self.width = size
        self.input_h, self.input_w = input_size
        self.first = (_source(low_size[0], SAM_IMAGE_SIZE), _source(low_size[1], SAM_IMAGE_SIZE))
        self.second = (_source(self.input_h, self.height), _source(self.input_w, self.width))
        # The exact path computes only the cells of the 1024x1024 upsampling that the second
        # resize reads (they lie in the crop; a photo smaller than the working size reads fewer).
        rows = np.union1d(*self.second[0][:2])
        cols = np.union1d(*self.second[1][:2])
        row_at = np.full(self.input_h, -1)
        row_at[rows] = np.arange(len(rows))
        col_at = np.full(self.input_w, -1)
        col_at[cols] = np.arange(len(cols))
        self.compact = (
            tuple(a[rows] for a in self.first[0]),
            tuple(a[cols] for a in self.first[1]),
        )
        self.compact_cells = len(rows) * len(cols)
        self.compact_rows = _remap(self.second[0], row_at)
        self.compact_cols = _remap(self.second[1], col_at)
        # The approximation resizes only the block of logits the crop reads; with an integer
        # factor its coordinates are those of the full 1024x1024 resize.
        self.block = low_size
        if all(SAM_IMAGE_SIZE % n == 0 for n in low_size):
            self.block = (
                int(self.first[0][1][self.input_h - 1]) + 1,
                int(self.first[1][1][self.input_w - 1]) + 1,
            )
        self.padded = (
            self.block[0] * SAM_IMAGE_SIZE // low_size[0],
            self.block[1] * SAM_IMAGE_SIZE // low_size[1],
        )

    @property
    def band_rows(self) -> int:
        return max(1, min(self.height, _BAND_PIXELS // self.width))

    def exact_at(
        self, logits: np.ndarray, compact: np.ndarray | None, ys: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """torch's values of the output pixels (ys, xs), from the `compact` first resize if
        given."""
        if compact is None:
            read = partial(_bilinear_at, partial(_read, logits), *self.first)
            rows, cols = self.second
        else:
            read, rows, cols = partial(_read, compact), self.compact_rows, self.compact_cols
        out = np.empty(len(ys), dtype=np.float32)
        for start in range(0, len(ys), _CHUNK // 8):
            part = slice(start, start + _CHUNK // 8)
            out[part] = _bilinear_at(read, rows, cols, ys[part], xs[part])
        return out

    def exact_rows(self, compact: np.ndarray, start: int, stop: int) -> np.ndarray:
        """torch's values of output rows start..stop-1, from the `compact` first resize."""
        rows = tuple(a[start:stop] for a in self.compact_rows)
        return _interpolate(compact, rows, self.compact_cols)

    def approximate_rows(
        self, crop: np.ndarray, start: int, stop: int, scratch: _Scratch
    ) -> np.ndarray:
        """OpenCV's approximation of output rows start..stop-1 from its first resize `crop`."""
        approx = scratch("approx", (stop - start, self.width), np.float32)
        if stop - start == self.height:
            return cv2.resize(crop, approx.shape[::-1], dst=approx, interpolation=cv2.INTER_LINEAR)
        # A band of a large photo: torch's row weights for the height (on the narrower working
        # rows), then OpenCV for the width alone.
        index0, index1, lambda0, lambda1 = (a[start:stop] for a in self.second[0])
        rows = np.take(
            crop, index0, axis=0, out=scratch("rows", (stop - start, self.input_w), np.float32)
        )
        rows *= lambda0[:, None]
        lower = np.take(crop, index1, axis=0, out=scratch("lower", rows.shape, np.float32))
        lower *= lambda1[:, None]
        rows += lower
        return cv2.resize(rows, approx.shape[::-1], dst=approx, interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=4)
def _frame(low_size: tuple[int, int], input_size: tuple[int, int], size: tuple[int, int]) -> _Frame:
    return _Frame(low_size, input_size, size)


def _upsample(
    logits: np.ndarray, frame: _Frame, threshold: np.float32, out: np.ndarray, scratch: _Scratch
) -> int:
    """`out` (HxW bool) from one 256x256 map of logits; returns how many pixels were computed
    torch's way."""
    block = logits[: frame.block[0], : frame.block[1]]
    spread = float(np.abs(block).max())
    crop = None
    if np.isfinite(spread):  # NaN or inf: torch's way, which propagates them as torch does
        padded = scratch("padded", frame.padded, np.float32)
        padded = cv2.resize(block, padded.shape[::-1], dst=padded, interpolation=cv2.INTER_LINEAR)
        crop = padded[: frame.input_h, : frame.input_w]
        tolerance = _SLACK * spread + _UNDERFLOW
        low, high = float(threshold) - tolerance, float(threshold) + tolerance
    compact = None
    exact = 0
    for start in range(0, frame.height, frame.band_rows):
        stop = min(frame.height, start + frame.band_rows)
        band = out[start:stop]
        if crop is not None:
            approx = frame.approximate_rows(crop, start, stop, scratch)
            flags = cv2.inRange(approx, low, high, dst=scratch("flags", approx.shape, np.uint8))
            if cv2.countNonZero(flags) <= _EXACT_SHARE * band.size:
                np.greater(approx, threshold, out=band)
                near = np.flatnonzero(
                    np.not_equal(flags, 0, out=scratch("near", band.shape, np.bool_))
                )
                exact += len(near)
                if compact is None and exact * _WHOLE_FIRST > frame.compact_cells:
                    compact = _interpolate(logits, *frame.compact)
                if len(near):
                    ys, xs = np.divmod(near, frame.width)
                    values = frame.exact_at(logits, compact, ys + start, xs)
                    band.flat[near] = values > threshold
                continue
            crop = None  # the rest is likely as crowded: skip approximating it
        if compact is None:
            compact = _interpolate(logits, *frame.compact)
        band[...] = frame.exact_rows(compact, start, stop) > threshold
        exact += band.size
    return exact


def upsample_masks(
    low_res: np.ndarray,
    input_size: Sequence[int],
    original_size: Sequence[int],
    threshold: float = 0.0,
) -> np.ndarray:
    """KxHxW bool masks from SAM's Kx256x256 logits (Sam.postprocess_masks, then > threshold,
    compared in float32 as torch does)."""
    logits = np.asarray(low_res, dtype=np.float32)
    frame = _frame(
        (logits.shape[1], logits.shape[2]),
        (int(input_size[0]), int(input_size[1])),
        (int(original_size[0]), int(original_size[1])),
    )
    masks = np.empty((len(logits), frame.height, frame.width), dtype=bool)
    try:
        scratch = _spare.pop()
    except IndexError:  # none yet, or another thread holds it
        scratch = _Scratch()
    for one, mask in zip(logits, masks, strict=True):
        _upsample(one, frame, np.float32(threshold), mask, scratch)
    if not _spare:
        _spare.append(scratch)
    return masks
