"""Where each flow's model looks: the geometry between the original image and a model's input.

Each planner returns a small frozen dataclass that maps the original image into the model's
input and the model's output back to the original size; the caller then keeps only the masked
pixels with `utils.masks.paste_masked`:

    plan = plan_fill_window(image.shape[:2], mask, 512)
    generated = pipeline(plan.crop_image(image), plan.crop_mask(mask))
    result = paste_masked(image, plan.restore(generated, image), mask)

Sizes are (height, width); points and boxes are [x, y] = [column, row]. Resampling follows
OpenCV's pixel-centre convention (dst pixel i covers src [i / s, (i + 1) / s) for a scale s),
so every mapping here is the exact inverse of the other direction.

Images: INTER_AREA when shrinking (anti-aliased), INTER_CUBIC when enlarging. Masks of the
regions to regenerate (fill window, LaMa part): nearest (INTER_NEAREST_EXACT) when enlarging,
"any coverage" (INTER_AREA > 0) when shrinking, so thin strokes never vanish. The letterbox's
object mask is plain nearest (see `Letterbox.apply_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from utils.exceptions import EmptyMaskException
from utils.masks import dilate_mask, mask_bbox

Size = tuple[int, int]
Box = tuple[int, int, int, int]

# Guards against float error turning an exact size (e.g. 512 / 300 * 300) into size - 1.
_EPS = 1e-6


def _check_size(image_size: Sequence[int]) -> Size:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    height, width = int(image_size[0]), int(image_size[1])
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _check_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != size:
        raise ValueError(f"mask shape {mask.shape} does not match image size {size}")
    return mask.astype(bool)


def _check_image(image: np.ndarray, size: Size) -> None:
    if image.ndim != 3 or image.shape[:2] != size:
        raise ValueError(f"image shape {image.shape} does not match image size {size} (HxWxC)")


def _is_enlarging(src: Size, dst: Size) -> bool:
    return dst[0] * dst[1] >= src[0] * src[1]


def _resize_image(image: np.ndarray, size: Size) -> np.ndarray:
    """Resize an HxWxC image to `size`; returns `image` itself when the size already matches."""
    if image.shape[:2] == size:
        return image
    interpolation = cv2.INTER_CUBIC if _is_enlarging(image.shape[:2], size) else cv2.INTER_AREA
    resized = cv2.resize(image, (size[1], size[0]), interpolation=interpolation)
    return resized.reshape(size + image.shape[2:])  # cv2 drops a trailing channel axis of 1


def _resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    if mask.shape == size:
        return mask.copy()
    if size[0] >= mask.shape[0] and size[1] >= mask.shape[1]:
        resized = cv2.resize(
            mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT
        )
        return resized.astype(bool)
    # float32 so that a sliver of coverage is not rounded away, as it would be in uint8.
    resized = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return resized > 0


def _pad_reflect(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    if top == bottom == left == right == 0:
        return image
    widths = ((top, bottom), (left, right)) + ((0, 0),) * (image.ndim - 2)
    # numpy reflects repeatedly when the pad is wider than the image (cv2 would refuse).
    return np.pad(image, widths, mode="reflect")


# --------------------------------------------------------------------------------------------
# Fill: a crop_size x crop_size window around the mask (Inpaint-Anything's crop_for_filling_*)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FillWindow:
    """A square window of the scaled (and, if needed, padded) image around the mask.

    The original image is resized to `scaled_size`, reflect-padded to `padded_size` (only when
    the scaled image is smaller than the window on a side), and the window is the crop
    [y, y + crop_size) x [x, x + crop_size) of that padded image.
    """

    image_size: Size
    crop_size: int
    scaled_size: Size
    padded_size: Size
    pad_top: int
    pad_left: int
    x: int
    y: int

    @property
    def kind(self) -> str:
        return "window"

    @property
    def scale_x(self) -> float:
        return self.scaled_size[1] / self.image_size[1]

    @property
    def scale_y(self) -> float:
        return self.scaled_size[0] / self.image_size[0]

    def window_box(self) -> tuple[float, float, float, float]:
        """The window's extent (x0, y0, x1, y1) in original pixel-edge coordinates."""
        left = self.x - self.pad_left
        top = self.y - self.pad_top
        return (
            left / self.scale_x,
            top / self.scale_y,
            (left + self.crop_size) / self.scale_x,
            (top + self.crop_size) / self.scale_y,
        )

    def to_window(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map [x, y] pixel positions of the original to (fractional) window pixel positions."""
        pts = _as_points(points)
        u = (pts[:, 0] + 0.5) * self.scale_x - (self.x - self.pad_left) - 0.5
        v = (pts[:, 1] + 0.5) * self.scale_y - (self.y - self.pad_top) - 0.5
        return np.stack([u, v], axis=1)

    def _scaled_padded(self, image: np.ndarray) -> np.ndarray:
        scaled = _resize_image(image, self.scaled_size)
        return _pad_reflect(
            scaled,
            self.pad_top,
            self.padded_size[0] - self.scaled_size[0] - self.pad_top,
            self.pad_left,
            self.padded_size[1] - self.scaled_size[1] - self.pad_left,
        )

    def _window(self, array: np.ndarray) -> np.ndarray:
        c = self.crop_size
        return np.array(array[self.y : self.y + c, self.x : self.x + c])  # a copy, never a view

    def extract(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window of the image, window of the mask): what the pipeline paints."""
        return self.crop_image(image), self.crop_mask(mask)

    def crop_image(self, image: np.ndarray) -> np.ndarray:
        """The crop_size x crop_size x C window of `image` (the pipeline's input image)."""
        _check_image(image, self.image_size)
        return self._window(self._scaled_padded(image))

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """The crop_size x crop_size bool window of `mask`; the padding band is never masked."""
        mask = _check_mask(mask, self.image_size)
        scaled = _resize_mask(mask, self.scaled_size)
        padded = np.zeros(self.padded_size, dtype=bool)
        sh, sw = self.scaled_size
        padded[self.pad_top : self.pad_top + sh, self.pad_left : self.pad_left + sw] = scaled
        return self._window(padded)

    def restore(self, generated_window: np.ndarray, original_image: np.ndarray) -> np.ndarray:
        """`original_image` with the window's footprint replaced by `generated_window`, resampled.

        Pixels whose centre falls inside the window come from the generated window (their
        neighbours outside it blend with the rescaled original at the window's rim); all others
        are `original_image` unchanged. Callers still paste only the masked pixels.
        """
        _check_image(original_image, self.image_size)
        c = self.crop_size
        if generated_window.shape != (c, c) + original_image.shape[2:]:
            raise ValueError(
                f"generated window shape {generated_window.shape} is not "
                f"{(c, c) + original_image.shape[2:]}"
            )
        if self.scaled_size == self.image_size == self.padded_size:
            result = original_image.copy()
            result[self.y : self.y + c, self.x : self.x + c] = generated_window
            return result
        canvas = self._scaled_padded(original_image)
        canvas[self.y : self.y + c, self.x : self.x + c] = generated_window.astype(canvas.dtype)
        sh, sw = self.scaled_size
        scaled = canvas[self.pad_top : self.pad_top + sh, self.pad_left : self.pad_left + sw]
        back = _resize_image(scaled, self.image_size)

        rows = self._footprint(self.image_size[0], self.scale_y, self.y - self.pad_top)
        cols = self._footprint(self.image_size[1], self.scale_x, self.x - self.pad_left)
        result = original_image.copy()
        result[rows, cols] = back[rows, cols]
        return result

    def _footprint(self, length: int, scale: float, start: int) -> slice:
        centres = (np.arange(length) + 0.5) * scale
        inside = np.flatnonzero((centres >= start) & (centres <= start + self.crop_size))
        if inside.size == 0:
            return slice(0, 0)
        return slice(int(inside[0]), int(inside[-1]) + 1)


def _scaled_length(length: int, scale: float) -> int:
    # Rounding moves a side by at most half a pixel, which the shrink's 1-pixel margin absorbs.
    return max(1, math.floor(length * scale + 0.5))


def _span(lo: int, hi: int, scaled: int, original: int) -> tuple[int, int]:
    """Integer pixel interval of the scaled image that fully covers original pixels [lo, hi)."""
    return (lo * scaled) // original, -((-hi * scaled) // original)


def _place(lo: int, hi: int, padded: int, crop: int) -> int:
    """Window start: centred on [lo, hi) and clamped into [0, padded - crop].

    When hi - lo <= crop, a centred window covers [lo, hi), and clamping only moves it toward
    the image, which stays covering it because [lo, hi) lies inside [0, padded).
    """
    return min(max((lo + hi - crop) // 2, 0), padded - crop)


def fill_canvas_pixels(image_size: Sequence[int], crop_size: int) -> int:
    """The most pixels `plan_fill_window` can scale the image to, whatever the mask: it
    enlarges only to bring the short side up to `crop_size` (a shrink makes it smaller)."""
    height, width = _check_size(image_size)
    short = min(height, width)
    if short >= crop_size:
        return height * width
    scale = crop_size / short
    return _scaled_length(height, scale) * _scaled_length(width, scale)


def plan_fill_window(image_size: Sequence[int], mask: np.ndarray, crop_size: int) -> FillWindow:
    """Plan the fill flow's square window so that it contains every True pixel of `mask`.

    Inpaint-Anything's rule, with its defects fixed: upscale so the short side is `crop_size`
    when it is shorter; if the mask's bbox is still larger than the window, shrink instead so the
    bbox fits (with one pixel to spare on each side, so rounding can never push it out); pad the
    scaled image by reflection where it is smaller than the window (Inpaint-Anything padded with
    black, which the pipeline then treats as content to keep); centre the window on the bbox and
    clamp it inside the padded image. Raises EmptyMaskException for an empty mask.
    """
    height, width = _check_size(image_size)
    if crop_size < 8:
        raise ValueError(f"crop_size must be >= 8, got {crop_size}")
    mask = _check_mask(mask, (height, width))
    bbox = mask_bbox(mask)
    if bbox is None:
        raise EmptyMaskException("the mask is empty: nothing to fill")
    x0, y0, x1, y1 = bbox

    def fits(size: Size) -> bool:
        sy0, sy1 = _span(y0, y1, size[0], height)
        sx0, sx1 = _span(x0, x1, size[1], width)
        return sy1 - sy0 <= crop_size and sx1 - sx0 <= crop_size

    short = min(height, width)
    scale = crop_size / short if short < crop_size else 1.0
    scaled = (_scaled_length(height, scale), _scaled_length(width, scale))
    if not fits(scaled):
        scale = (crop_size - 2) / max(x1 - x0, y1 - y0)
        scaled = (_scaled_length(height, scale), _scaled_length(width, scale))
        if not fits(scaled):  # pragma: no cover - excluded by the 1-pixel margin above
            raise AssertionError(f"bbox {bbox} does not fit a {crop_size} window at {scaled}")

    padded = (max(crop_size, scaled[0]), max(crop_size, scaled[1]))
    pad_top = (padded[0] - scaled[0]) // 2
    pad_left = (padded[1] - scaled[1]) // 2
    sy0, sy1 = _span(y0, y1, scaled[0], height)
    sx0, sx1 = _span(x0, x1, scaled[1], width)
    return FillWindow(
        image_size=(height, width),
        crop_size=crop_size,
        scaled_size=scaled,
        padded_size=padded,
        pad_top=pad_top,
        pad_left=pad_left,
        x=_place(sx0 + pad_left, sx1 + pad_left, padded[1], crop_size),
        y=_place(sy0 + pad_top, sy1 + pad_top, padded[0], crop_size),
    )


# --------------------------------------------------------------------------------------------
# Replace: letterbox the whole image (Inpaint-Anything's resize_and_pad / recover_size)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """The image scaled so its long side is `target`, centred on a target x target canvas."""

    image_size: Size
    target: int
    resized_size: Size
    pad_top: int
    pad_left: int

    @property
    def kind(self) -> str:
        return "letterbox"

    @property
    def pad_bottom(self) -> int:
        return self.target - self.resized_size[0] - self.pad_top

    @property
    def pad_right(self) -> int:
        return self.target - self.resized_size[1] - self.pad_left

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """target x target x C: the resized image, reflect-padded.

        Inpaint-Anything pads with black. The band is always regenerated and cropped away, but
        with strength < 1 the pipeline starts from the noised input there, and black bars bias
        the visible edges toward a dark frame; mirrored content keeps their statistics.
        """
        _check_image(image, self.image_size)
        resized = _resize_image(image, self.resized_size)
        padded = _pad_reflect(resized, self.pad_top, self.pad_bottom, self.pad_left, self.pad_right)
        return padded.copy() if padded is image else padded

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """target x target bool (nearest); the band is False, i.e. background, so replace
        (which inpaints the inverted mask) regenerates it."""
        mask = _check_mask(mask, self.image_size)
        resized = cv2.resize(
            mask.astype(np.uint8),
            (self.resized_size[1], self.resized_size[0]),
            interpolation=cv2.INTER_NEAREST_EXACT,
        ).astype(bool)
        padded = np.zeros((self.target, self.target), dtype=bool)
        h, w = self.resized_size
        padded[self.pad_top : self.pad_top + h, self.pad_left : self.pad_left + w] = resized
        return padded

    def extract(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(letterboxed image, letterboxed mask of the region to paint); the band is painted
        too, whatever the flow, since it is cropped away afterwards."""
        return self.apply_image(image), ~self.apply_mask(~_check_mask(mask, self.image_size))

    def restore(
        self, generated: np.ndarray, original_image: np.ndarray | None = None
    ) -> np.ndarray:
        """Crop the band off a target x target x C output and resize it to the original size
        (`original_image` is not needed: the whole image was regenerated)."""
        if generated.ndim != 3 or generated.shape[:2] != (self.target, self.target):
            raise ValueError(
                f"generated shape {generated.shape} is not {self.target}x{self.target}xC"
            )
        h, w = self.resized_size
        inner = generated[self.pad_top : self.pad_top + h, self.pad_left : self.pad_left + w]
        return np.array(_resize_image(inner, self.image_size))  # always a new array


def plan_letterbox(image_size: Sequence[int], target: int) -> Letterbox:
    """Scale so the long side equals `target` (int() of each side, as Inpaint-Anything) and centre
    it: top = pad_h // 2, left = pad_w // 2."""
    height, width = _check_size(image_size)
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    scale = target / max(height, width)
    resized = (
        min(target, max(1, int(height * scale + _EPS))),
        min(target, max(1, int(width * scale + _EPS))),
    )
    return Letterbox(
        image_size=(height, width),
        target=target,
        resized_size=resized,
        pad_top=(target - resized[0]) // 2,
        pad_left=(target - resized[1]) // 2,
    )


# --------------------------------------------------------------------------------------------
# Remove: the part of a large image LaMa sees
# --------------------------------------------------------------------------------------------

LamaKind = Literal["full", "crop", "downscale"]

# After a downscale the mask grows by this many pixels so that every bicubic tap (2 on each side)
# used to upscale a masked pixel back is an inpainted one: nothing of the object leaks back.
_LAMA_DOWNSCALE_GROW = 2


@dataclass(frozen=True)
class LamaRegion:
    """`box` (x0, y0, x1, y1) of the original is resized to `part_size` and given to LaMa.

    kind "full": the whole image as is; "crop": box around the mask, no scaling; "downscale":
    the whole image, shrunk so its long side is the maximum size.
    """

    kind: LamaKind
    image_size: Size
    box: Box
    part_size: Size

    def extract(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image part, bool mask part) to inpaint.

        When downscaled, a part pixel is masked if any masked original pixel overlaps it
        (INTER_AREA > 0), then the part mask grows by 2 pixels (see `restore`).
        """
        _check_image(image, self.image_size)
        mask = _check_mask(mask, self.image_size)
        x0, y0, x1, y1 = self.box
        mask_part = mask[y0:y1, x0:x1]
        if self.kind != "downscale":
            image_part = np.array(image[y0:y1, x0:x1])
        else:  # resized straight from the view: no full-size copy
            image_part = _resize_image(image[y0:y1, x0:x1], self.part_size)
            mask_part = dilate_mask(
                _resize_mask(mask_part, self.part_size), 2 * _LAMA_DOWNSCALE_GROW + 1
            )
        return image_part, mask_part.copy()

    def restore(self, result_part: np.ndarray, original_image: np.ndarray) -> np.ndarray:
        """The full-size image: `original_image` with the part put back (upscaled with
        INTER_CUBIC when it was downscaled). Callers still paste only the masked pixels."""
        _check_image(original_image, self.image_size)
        expected = self.part_size + original_image.shape[2:]
        if result_part.shape != expected:
            raise ValueError(f"result shape {result_part.shape} is not {expected}")
        result_part = result_part.astype(original_image.dtype, copy=False)
        if self.kind == "downscale":
            restored = _resize_image(result_part, self.image_size)
            return restored if restored is not result_part else restored.copy()
        result = original_image.copy()
        x0, y0, x1, y1 = self.box
        result[y0:y1, x0:x1] = result_part
        return result


def plan_lama_region(
    image_size: Sequence[int], mask: np.ndarray, max_size: int, margin: int
) -> LamaRegion:
    """Whole image if its long side <= max_size; else the mask's bbox grown by `margin` (clamped
    to the image) if that fits in max_size; else the whole image downscaled to long side max_size.
    Raises EmptyMaskException for an empty mask."""
    height, width = _check_size(image_size)
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    mask = _check_mask(mask, (height, width))
    bbox = mask_bbox(mask)
    if bbox is None:
        raise EmptyMaskException("the mask is empty: nothing to remove")
    whole: Box = (0, 0, width, height)
    if max(height, width) <= max_size:
        return LamaRegion("full", (height, width), whole, (height, width))
    x0, y0, x1, y1 = bbox
    box: Box = (
        max(0, x0 - margin),
        max(0, y0 - margin),
        min(width, x1 + margin),
        min(height, y1 + margin),
    )
    if max(box[2] - box[0], box[3] - box[1]) <= max_size:
        return LamaRegion("crop", (height, width), box, (box[3] - box[1], box[2] - box[0]))
    scale = max_size / max(height, width)
    part = (max(1, round(height * scale)), max(1, round(width * scale)))
    return LamaRegion("downscale", (height, width), whole, part)


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


def _as_points(points: np.ndarray | Sequence[Sequence[float]] | Sequence[float]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape == (2,):
        pts = pts.reshape(1, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be [x, y] or [[x, y], ...], got shape {pts.shape}")
    return pts


def points_inside(
    points: np.ndarray | Sequence[Sequence[float]] | Sequence[float], image_size: Sequence[int]
) -> np.ndarray:
    """(N,) bool: which [x, y] points lie in [0, W) x [0, H). A single [x, y] counts as N = 1;
    NaN and infinities are outside."""
    height, width = _check_size(image_size)
    pts = _as_points(points)
    x, y = pts[:, 0], pts[:, 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)
