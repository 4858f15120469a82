"""Geometry limits, checked on the image's size before any model runs (README: Limits).

- Aspect ratio: SAM works at long side 1024, so a side shorter than 1024 / 2048 of the long one
  rounds to zero pixels there; MAX_ASPECT_RATIO (at most 2048) refuses such strips with a 422.
- Upscaled canvas: fill enlarges the whole image until its short side is the SD window (512 or
  1024); MAX_CANVAS_PIXELS bounds that canvas (a 1,000,000x1 strip would need 196 GB).
"""

from __future__ import annotations

from utils.exceptions import ValidationException
from utils.windows import fill_canvas_pixels


def check_aspect_ratio(height: int, width: int, max_ratio: float) -> None:
    ratio = max(height, width) / min(height, width)
    if ratio > max_ratio:
        raise ValidationException(
            f"the image is {width}x{height}, an aspect ratio of {ratio:.4g}:1; at most "
            f"{max_ratio:g}:1 is accepted (MAX_ASPECT_RATIO)"
        )


def check_fill_canvas(height: int, width: int, crop_size: int, max_pixels: int) -> None:
    pixels = fill_canvas_pixels((height, width), crop_size)
    if pixels > max_pixels:
        raise ValidationException(
            f"filling this {width}x{height} image scales it up to {pixels:,} pixels so that its "
            f"short side matches the {crop_size}-pixel SD window; at most {max_pixels:,} are "
            "allowed (MAX_CANVAS_PIXELS)"
        )
